"""How hard to unlearn, chosen without the retrain or the test set.

The rule: the *weakest* strength at which the forgotten users become indistinguishable from
users no model ever saw, on the matched attack of their validation-period samples
(attack.py, phase `valid`: never a training label, and neither the retrain nor the test set
is read). "Indistinguishable" is the attack's 95% interval over users reaching 0.5; the
weakest such strength because every step past it costs utility for nothing the attack can
see. When no strength gets there, the one whose attack lands nearest 0.5. When the original
itself is already indistinguishable there, the rule has nothing to read: it says so and
keeps the weakest strength. Measured on users:0.1 (default model, 47 never-seen users, so
23 and 24 per half): the original's validation-period attack is 0.520 with an interval
reaching 0.43, so on ML-100K the rule cannot tell strengths apart and always keeps the
weakest (benchmarks/results/verdicts.json).

Before this rule, strength was chosen on validation AUC drop alone (the strongest lr that
lost < 0.005), which says nothing about whether the forgotten users still stand out, and
the lab's defaults were chosen on test-set numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..circuits.lean import discover_groups
from ..data.forget import ForgetSet
from ..errors import SettingsError
from ..model.recommender import Recommender
from ..progress import ProgressFn, or_silent
from ..workspace import Workspace
from .ablation import random_groups
from .attack import AttackResult, AttackStop
from .run import UnlearnConfig, unlearn_steps

@dataclass(frozen=True)
class StrengthPoint:
    strength: float  # the Adam learning rate (the budget is the same for every strength)
    attack: AttackResult  # matched attack on the validation period

    def to_json(self) -> dict:
        a = self.attack
        return {"strength": self.strength, "attack_valid": a.auc, "low": a.low, "high": a.high,
                "indistinguishable": a.indistinguishable}


@dataclass(frozen=True)
class StrengthChoice:
    strength: float
    reason: str
    points: tuple[StrengthPoint, ...]
    original: AttackResult | None = None  # do nothing, on the same attack
    informative: bool = True  # False: the original was already indistinguishable, the rule had nothing to read

    def to_json(self) -> dict:
        o = self.original
        return {"strength": self.strength, "reason": self.reason, "informative": self.informative,
                "points": [p.to_json() for p in self.points],
                "original": None if o is None else {"attack_valid": o.auc, "low": o.low, "high": o.high}}


def choose_strength(points: list[StrengthPoint], original: AttackResult | None = None) -> StrengthChoice:
    """The weakest strength whose validation-period attack is indistinguishable from never-seen users; else
    the one nearest 0.5 (ties: the weaker). `original`: do nothing on the same attack; if it is already
    indistinguishable, the weakest strength, said as such (informative False)."""
    if not points:
        raise SettingsError("no strength to choose from")
    ordered = sorted(points, key=lambda p: p.strength)
    if original is not None and original.indistinguishable:
        return StrengthChoice(ordered[0].strength, f"the original is already indistinguishable from never-seen users "
                              f"on the validation period (attack {original.auc:.3f}, interval from {original.low:.3f})"
                              ": nothing for the rule to read; the weakest strength", tuple(ordered), original, False)
    ok = [p for p in ordered if p.attack.indistinguishable]
    if ok:
        return StrengthChoice(ok[0].strength, "weakest strength whose forgotten users are indistinguishable from "
                                              "never-seen ones (validation period)", tuple(ordered), original)
    near = min(ordered, key=lambda p: abs(p.attack.auc - 0.5))
    return StrengthChoice(near.strength, "no strength made the forgotten users indistinguishable; the nearest to 0.5",
                          tuple(ordered), original)


def strength_sweep(ws: Workspace, original: Recommender, forget: ForgetSet, cfg: UnlearnConfig,
                   strengths: tuple[float, ...], progress: ProgressFn | None = None) -> StrengthChoice:
    """Run the method at each strength (nothing stored) and choose by the rule. Reads the original, the forget
    set, retained and never-seen users' validation-period samples: never the retrain or the test set."""
    progress = or_silent(progress)
    attack = AttackStop(ws.interactions, original, forget, asked_by="--strength auto")  # prompts built once
    if cfg.uses_circuits and not cfg.groups:
        found = discover_groups(ws, original, forget, cfg.circuits, cfg.thresholds, progress)
        labels = found.labels if cfg.random_groups is None else random_groups(found.labels, found.table,
                                                                                cfg.random_groups)
    else:
        labels = cfg.given_groups if cfg.groups else None
    before = attack.check(original.model)
    points, ordered = [], sorted(strengths)
    for i, lr in enumerate(ordered):
        # each run's steps advance one "strength" bar over all the runs: it never goes back between runs
        inner = lambda stage, k, n, i=i: progress("strength", i * n + k, len(ordered) * n)  # noqa: E731
        steps = unlearn_steps(ws, original, forget, replace(cfg, lr=lr), labels, inner)
        points.append(StrengthPoint(lr, attack.check(steps.model.eval())))
    return choose_strength(points, before)
