"""Forget-specific, retain-specific, task-shared and inactive modules, and their stability.

A module's importance on a prompt set is |node score| divided by the mean |node score|
over modules (heads and MLPs) on that set: 1.0 is an average module, whatever the model
size, and forget and retain importances share a scale even when one prompt set moves
the metric more than the other. (Dividing by the maximum was tried first: on the
default model the first MLP carries ~60% of all attribution, so every other module fell
under any useful threshold.) The labels follow the design's rule, one threshold per side:

    forget importance >= forget_threshold   retain importance >= retain_threshold   label
                     yes                                     no                  forget-specific
                     no                                      yes                 retain-specific
                     yes                                     yes                 task-shared
                     no                                      no                  inactive
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from itertools import combinations

import torch

from ..errors import SettingsError


class Group(str, Enum):
    FORGET = "forget-specific"
    RETAIN = "retain-specific"
    SHARED = "task-shared"
    INACTIVE = "inactive"


@dataclass(frozen=True)
class GroupThresholds:
    forget: float = 0.5  # importance on forget prompts, in units of the mean module (half of it by default)
    retain: float = 0.5  # the same on retain prompts

    def __post_init__(self) -> None:
        for side, value in asdict(self).items():
            if not value >= 0.0:
                raise SettingsError(f"the {side} threshold must be a number >= 0, got {value}")


def normalised_importance(scores: torch.Tensor) -> torch.Tensor:
    magnitude = scores.abs().double()
    mean = magnitude.mean() if magnitude.numel() else torch.tensor(0.0)
    return magnitude / mean if mean > 0 else torch.zeros_like(magnitude)


def label_modules(names: list[str], forget_scores: torch.Tensor, retain_scores: torch.Tensor,
                  thresholds: GroupThresholds = GroupThresholds()) -> dict[str, Group]:
    f = normalised_importance(forget_scores) >= thresholds.forget
    r = normalised_importance(retain_scores) >= thresholds.retain
    table = {(True, False): Group.FORGET, (False, True): Group.RETAIN,
             (True, True): Group.SHARED, (False, False): Group.INACTIVE}
    return {name: table[(bool(fi), bool(ri))] for name, fi, ri in zip(names, f, r)}


def members(labels: dict[str, Group], group: Group) -> set[str]:
    return {name for name, g in labels.items() if g is group}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; two empty groups agree perfectly (1.0)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def group_stability(labelings: list[dict[str, Group]]) -> dict[str, float]:
    """Mean pairwise Jaccard of each group's members across repeated labelings."""
    if len(labelings) < 2:
        raise ValueError("stability needs at least two labelings")
    return {g.value: sum(jaccard(members(a, g), members(b, g)) for a, b in combinations(labelings, 2))
            / (len(labelings) * (len(labelings) - 1) / 2) for g in Group}
