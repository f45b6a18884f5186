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
from .modules import flat, write_flat

Grads = dict[str, torch.Tensor]


class Method(str, Enum):
    RETRAIN = "retrain"
    GA = "ga"
    GRADDIFF = "graddiff"
    NPO = "npo"
    KL = "kl"
    PCGRAD = "pcgrad"
    SALUN = "salun"
    CURE = "cure"
    SELECTIVE = "selective"


def parse_method(value) -> Method:
    return parse_choice(Method, value, "method")


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


def circuit_rules(g_f: Grads, g_r: Grads, retain_weight: float, table: NodeTable, groups: dict[str, Group],
                  retain_specific: RetainSpecific) -> Step:
    """CURE: each parameter block updated by its group's rule (see `block_group`).

    forget-specific: forget update only; retain-specific: frozen (or retain update only);
    task-shared: forget gradient projected off the block's retain gradient when they
    conflict, plus the retain update; inactive (and unlisted): frozen. Every trainable
    parameter lies in exactly one block, so nothing is frozen for want of an owner.
    """
    direction, forget_part = _zeros(g_f), _zeros(g_f)
    moved: set[str] = set()
    rules: dict[str, str] = {}
    for block in table.blocks:
        group = block_group(block.owners, groups)
        if group is Group.INACTIVE or (group is Group.RETAIN and retain_specific is RetainSpecific.FREEZE):
            for o in block.owners:
                rules.setdefault(o, "frozen")
            continue
        f, r = flat(g_f, block.slices), flat(g_r, block.slices)
        if group is Group.FORGET:
            fm, dm, rule = f, f, "forget only"
        elif group is Group.SHARED:
            fm = project_off(f, r)
            dm, rule = fm + retain_weight * r, "projected forget + retain"
        else:
            fm, dm, rule = torch.zeros_like(f), retain_weight * r, "retain only"
        write_flat(direction, block.slices, dm)
        write_flat(forget_part, block.slices, fm)
        for o in block.owners:
            if len(block.owners) == 1 or rules.get(o, "frozen") == "frozen":
                rules[o] = rule if len(block.owners) == 1 else f"{rule} (shared)"
        if fm.abs().sum() > 0:
            moved.update(block.owners)
    updated = [n for n in table.owners if n in moved]
    return Step(direction, forget_part, updated, rules)
