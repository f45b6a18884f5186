"""Unlearning update rules (the registry in registry.py pairs them with objectives).

Every rule gets, per step, g_f (gradient of the method's forget objective, to be
*descended*) and the second gradient (retain BCE, or the KL to the original), as
{parameter name: tensor}. It returns a `Step`: the direction to descend, the forget part
of it (what the rule-level conflict measures) and the nodes it touched. `retrain` is not
a step rule; it is the foundation's training on the retain set (see lab.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch

from ..circuits.groups import Group, block_group
from ..errors import parse_choice
from ..circuits.nodes import NodeTable
from .segments import Segments, segments

Grads = dict[str, torch.Tensor]


class UnlearningMethod(str, Enum):
    RETRAIN = "retrain"
    GA = "ga"
    GRADDIFF = "graddiff"
    NPO = "npo"
    KL = "kl"
    PCGRAD = "pcgrad"
    SALUN = "salun"
    CURE = "cure"
    SELECTIVE = "selective"


def parse_unlearning_method(value) -> UnlearningMethod:
    return parse_choice(UnlearningMethod, value, "method")


class RetainSpecific(str, Enum):
    FREEZE = "freeze"  # CURE default: the modules only the retain set needs are left alone
    RETAIN = "retain"  # option: they get the retain update only


@dataclass
class Step:
    direction: Grads
    forget_part: Grads
    updated: list[str]  # modules whose forget part is not zero
    rules: dict[str, str] = field(default_factory=dict)  # module -> the rule applied (cure/selective)


def _zeros(like: Grads) -> Grads:
    return {n: torch.zeros_like(t) for n, t in like.items()}


def _add(a: Grads, b: Grads, w: float = 1.0) -> Grads:
    return {n: a[n] + w * b[n] for n in a}


def _dot(a: Grads, b: Grads) -> torch.Tensor:
    return sum((a[n] * b[n]).sum() for n in a)


def project_off(g: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """g minus its component along `onto`, only when they conflict (PCGrad's rule)."""
    dot = g @ onto
    if dot >= 0 or onto.norm() == 0:
        return g
    return g - dot / (onto @ onto) * onto


def uniform(g_f: Grads, g_r: Grads, retain_weight: float, table: NodeTable) -> Step:
    return Step(_add(g_f, g_r, retain_weight), g_f, list(table.owners))


def pcgrad(g_f: Grads, g_r: Grads, retain_weight: float, table: NodeTable) -> Step:
    """PCGrad over the whole parameter vector: each gradient projected off the other when they conflict."""
    dot = _dot(g_f, g_r)
    if dot < 0:
        nf, nr = _dot(g_f, g_f), _dot(g_r, g_r)
        f = {n: g_f[n] - dot / nr * g_r[n] for n in g_f}
        r = {n: g_r[n] - dot / nf * g_f[n] for n in g_r}
    else:
        f, r = g_f, g_r
    return Step(_add(f, r, retain_weight), f, list(table.owners))


@dataclass(frozen=True)
class CircuitPlan:
    """CURE's per-block coefficients over the flat parameter vector, fixed for a run.

    Per block, the forget part is a*f + c*r and the direction adds e*r: a and e follow from the
    block's group alone, so they are spread over the elements once per run; only c (the projection
    of a task-shared block's forget gradient off its retain gradient) depends on the step. Built per
    step, the Python loop over the table's ~1,700 blocks was 9% of a CURE step (py-spy, default model).
    """

    seg: Segments
    forget_scale: torch.Tensor  # a, per element
    retain_scale: torch.Tensor  # e, per element
    shared: torch.Tensor  # per block: projected when its gradients conflict
    rules: dict[str, str]

    @classmethod
    def build(cls, table: NodeTable, like: Grads, groups: dict[str, Group], retain_weight: float,
              retain_specific: RetainSpecific) -> "CircuitPlan":
        seg = segments(table, like)
        n = seg.n_blocks
        a, e = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        shared = torch.zeros(n, dtype=torch.bool)
        rules: dict[str, str] = {}
        for b, block in enumerate(table.blocks):
            group = block_group(block.owners, groups)
            if group is Group.INACTIVE or (group is Group.RETAIN and retain_specific is RetainSpecific.FREEZE):
                for o in block.owners:
                    rules.setdefault(o, "frozen")
                continue
            if group is Group.FORGET:
                a[b], rule = 1.0, "forget only"
            elif group is Group.SHARED:
                a[b], e[b], shared[b], rule = 1.0, retain_weight, True, "projected forget + retain"
            else:
                e[b], rule = retain_weight, "retain only"
            for o in block.owners:
                if len(block.owners) == 1 or rules.get(o, "frozen") == "frozen":
                    rules[o] = rule if len(block.owners) == 1 else f"{rule} (shared)"
        dtype = next(iter(like.values())).dtype
        return cls(seg, seg.per_block(a).to(dtype), seg.per_block(e).to(dtype), shared, rules)

    def step(self, g_f: Grads, g_r: Grads) -> Step:
        seg = self.seg
        f, r = seg.flat(g_f), seg.flat(g_r)
        sums = seg.block_sums(f * r, r * r)
        dot, rr = sums[:, 0], sums[:, 1]
        c = torch.where(self.shared & (dot < 0) & (rr > 0), -dot / rr.clamp_min(1e-300), torch.zeros_like(dot))
        forget_flat = self.forget_scale * f + seg.per_block(c).to(f.dtype) * r
        direction_flat = forget_flat + self.retain_scale * r
        moved_blocks = seg.block_sums(forget_flat.abs()) > 0
        moved = set(seg.nodes[i] for i in seg.pair_node[moved_blocks[seg.pair_block]].tolist())
        updated = [m for m in seg.nodes if m in moved]  # the table's node order
        return Step(seg.unflat(direction_flat), seg.unflat(forget_flat), updated, dict(self.rules))


def circuit_rules(g_f: Grads, g_r: Grads, retain_weight: float, table: NodeTable, groups: dict[str, Group],
                  retain_specific: RetainSpecific) -> Step:
    """CURE: each parameter block updated by its group's rule (see `block_group`).

    forget-specific: forget update only; retain-specific: frozen (or retain update only);
    task-shared: forget gradient projected off the block's retain gradient when they
    conflict, plus the retain update; inactive (and unlisted): frozen. Every trainable
    parameter lies in exactly one block, so nothing is frozen for want of an owner.
    All blocks at once (segments.py), as `project_off` does block by block; a run builds its
    `CircuitPlan` once and reuses it at every step.
    """
    return CircuitPlan.build(table, g_f, groups, retain_weight, retain_specific).step(g_f, g_r)
