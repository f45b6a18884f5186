"""Gradient conflict per circuit module: cos(g_forget, g_retain) over the module's parameters.

Summaries: the share of modules with cos < 0, and the magnitude-weighted cosine
Σ_m w_m cos_m / Σ_m w_m with w_m = |g_f,m| |g_r,m| (negative = the big modules conflict).
The heatmap is layers x (heads + MLP), in the hook/graph vocabulary (`a{l}.h{h}`, `m{l}`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..circuits.nodes import NodeTable, graph_table
from .segments import segments


NEGATIVE = -1e-6  # below this a cosine counts as a conflict; a projected update sits at 0 +- rounding


def is_conflict(cos: float) -> bool:
    return cos < NEGATIVE


@dataclass
class ConflictMap:
    modules: list[str]
    cos: list[float]
    forget_norm: list[float]
    retain_norm: list[float]

    @property
    def negative_share(self) -> float:
        """Share of conflicting nodes among those both gradients reach (an item row absent from
        both batches has no gradient and no conflict: counting it would dilute the share)."""
        live = [c for c, f, r in zip(self.cos, self.forget_norm, self.retain_norm) if f > 0 and r > 0]
        return sum(map(is_conflict, live)) / len(live) if live else float("nan")

    @property
    def weighted_cos(self) -> float:
        w = torch.tensor(self.forget_norm) * torch.tensor(self.retain_norm)
        return float((w * torch.tensor(self.cos)).sum() / w.sum()) if float(w.sum()) > 0 else float("nan")

    def moved(self) -> "ConflictMap":
        """Only the nodes whose first vector (an applied change) is not zero."""
        keep = [i for i, f in enumerate(self.forget_norm) if f > 0]
        return ConflictMap([self.modules[i] for i in keep], [self.cos[i] for i in keep],
                           [self.forget_norm[i] for i in keep], [self.retain_norm[i] for i in keep])

    def heatmap(self, n_layers: int, n_heads: int) -> list[list[float | None]]:
        """rows = layers, columns = heads 0..H-1 then the MLP; None where a module is absent."""
        return graph_table(n_layers, n_heads).heatmap(dict(zip(self.modules, self.cos)))

    def to_json(self) -> dict:
        return {**asdict(self), "negative_share": self.negative_share, "weighted_cos": self.weighted_cos,
                "n_modules": len(self.cos)}

    @classmethod
    def from_json(cls, d: dict) -> "ConflictMap":
        return cls(d["modules"], d["cos"], d["forget_norm"], d["retain_norm"])


def conflict_maps(table: NodeTable, second: dict[str, torch.Tensor], firsts: list[dict[str, torch.Tensor]],
                  modules: list[list[str] | None]) -> list[ConflictMap]:
    """Per-node cosines of several first vectors (gradients or updates) against one second vector, over the
    slices each node owns, in one pass: a run measures three maps per step against its retain gradient.

    Vectorised over all nodes at once (see segments.py); `tests/test_segments.py` checks it against the
    node-by-node definition. Products are taken in the accumulation precision (float64 but on MPS).
    """
    seg = segments(table, second)
    r = seg.flat(second).to(seg.accumulate)
    columns = [r * r]
    for first in firsts:
        f = seg.flat(first).to(seg.accumulate)
        columns += [f * r, f * f]
    sums = seg.node_sums(seg.block_sums(*columns))  # (nodes, 1 + 2 per first vector)
    rn = sums[:, 0].sqrt()
    position = {n: i for i, n in enumerate(seg.nodes)}
    maps = []
    for k, names in enumerate(modules):
        dot, fn = sums[:, 1 + 2 * k], sums[:, 2 + 2 * k].sqrt()
        cos = torch.where((fn > 0) & (rn > 0), dot / (fn * rn).clamp_min(1e-300), torch.zeros_like(dot))
        names = list(names) if names is not None else list(seg.nodes)
        pick = torch.tensor([position[m] for m in names], dtype=torch.long, device=cos.device)
        maps.append(ConflictMap(names, cos[pick].tolist(), fn[pick].tolist(), rn[pick].tolist()))
    return maps


def conflict_map(table: NodeTable, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor],
                 modules: list[str] | None = None) -> ConflictMap:
    """Per-node cosine between two {param name: tensor} dicts (gradients or updates), over the slices it owns."""
    return conflict_maps(table, retain, [forget], [modules])[0]


def gradients(model, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """d loss / d parameter for every trainable parameter (zeros where it does not reach)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)}
