"""Where the forget gradient lives: its squared norm per parameter block of the node table.

CURE can only move what some node owns and its group lets move; this measures both. The
gradient is the forget objective of gradient ascent (-BCE on forget samples), the one
GA, GradDiff and CURE descend.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..model.objectives import ga_loss, prompt_scores
from .groups import Group, block_group
from .nodes import NodeTable


def forget_gradient_blocks(rec, table: NodeTable, prompts: list[list[int]], labels, batch_size: int = 64
                           ) -> tuple[list[float], float]:
    """Squared norm of the forget gradient in each block (table.blocks order), and over all parameters."""
    model = rec.model.eval()
    params = {n: p for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in params.items()}
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    labels = torch.as_tensor(labels)
    try:
        for p in params.values():
            p.requires_grad_(True)
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            loss = ga_loss(prompt_scores(model, chunk, rec.pad_id, rec.fmt.yes_id, rec.fmt.no_id),
                           labels[start : start + batch_size]) * len(chunk) / len(prompts)
            for (n, p), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()), allow_unused=True)):
                if g is not None:
                    grads[n] += g
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    total = float(sum((g.cpu().double() ** 2).sum() for g in grads.values()))  # host float64: none on MPS
    blocks = [float(sum((s.of(grads[s.param]).cpu().double() ** 2).sum() for s in b.slices)) for b in table.blocks]
    return blocks, total


@dataclass(frozen=True)
class Coverage:
    """How much of the forget gradient the circuit's nodes own (its squared norm's share), and how that share
    splits by the group whose rule each parameter block follows; None where the result holds no gradient."""
    forget_grad_share: float | None
    by_group: dict[str, float] | None = None
    moved_by_cure: float | None = None  # the share in forget-specific and task-shared blocks: what CURE moves

    def to_json(self) -> dict:
        if self.by_group is None:
            return {"forget_grad_share": self.forget_grad_share}
        return asdict(self)


def coverage_view(table: NodeTable, block_sq: list[float], total: float, groups: dict[str, Group]) -> Coverage:
    """Owned share of ||g_forget||^2 and its split by the group whose rule each block follows."""
    by_group = {g.value: 0.0 for g in Group}
    for block, sq in zip(table.blocks, block_sq):
        by_group[block_group(block.owners, groups).value] += sq / total if total > 0 else 0.0
    owned = sum(block_sq) / total if total > 0 else float("nan")
    return Coverage(owned, by_group, by_group[Group.FORGET.value] + by_group[Group.SHARED.value])
