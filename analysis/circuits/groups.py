"""Forget-specific, retain-specific, task-shared and inactive nodes, with intervals, and their stability.

**The specificity rule (default).** Per-prompt node scores are kept for forget and for
retain prompts, with the user each prompt belongs to. A node's importance on a side is
its mean |per-prompt score| as a share of its family's total on that side (families:
the embedding roles, which make up the input node; heads and MLPs, which make up the
model's computation; the item rows, which make up `emb:items`; and the neurons, which
make up the MLPs). Specificity = log(I_forget / I_retain), with a bootstrap over
**users** (each side's users resampled with replacement, all of a user's prompts with
them, seeded): prompts cluster by user, and resampling prompts let one user with many
prompts look like many independent witnesses (measured on users:0.1: a row seen in 5
forget prompts and 0 retain prompts got a tight interval at log ratio 8-10).

Each node is tested one-sided both ways, H0 "log ratio <= log(tau)" (forget) and
"log ratio >= -log(tau)" (retain), with a p-value from the bootstrap's standard error
(normal approximation: a percentile p-value cannot go below 1/(resamples+1), which with
~1,700 nodes under Benjamini-Hochberg at 0.05 would need ~34 discoveries before the first
could pass). The p-values of all nodes eligible for a side are then controlled for false
discoveries together (Benjamini-Hochberg, `scipy.stats.false_discovery_control`, level
`fdr`). With tau (2 by default), a floor (a share of at least `floor` times a uniform
share of the family, 0.5 by default) and, for item rows, a presence minimum (the row
occurs in the prompts of at least `min_users` users of that side):

    BH-adjusted p (forget) <= fdr, forget importance >= floor, present enough   forget-specific
    BH-adjusted p (retain) <= fdr, retain importance >= floor, present enough   retain-specific
    both importances >= floor, neither specific                                  task-shared
    otherwise                                                                    inactive

The interval shown is the percentile interval at `level`; its half-width is what the data
could detect: a node can be called forget-specific only when its log ratio exceeds about
log(tau) + half-width, so "no head is forget-specific" reads "none above that".
Mean |score| rather than |mean score|: a head that pushes some prompts one way and others
the other way is used on both.

**The threshold rule (option, the first round's).** |mean score| over the mean node of
its family, one threshold per side, no interval.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from itertools import combinations

import numpy as np
import torch
from scipy.stats import false_discovery_control, norm

from ..compute import to_numpy
from ..errors import SettingsError, parse_choice

EPS_SHARE = 1e-3  # log-ratio guard, in units of a uniform share: a node absent on one side stays finite


class Group(str, Enum):
    FORGET = "forget-specific"
    RETAIN = "retain-specific"
    SHARED = "task-shared"
    INACTIVE = "inactive"


class Rule(str, Enum):
    SPECIFICITY = "specificity"
    THRESHOLD = "threshold"


@dataclass(frozen=True)
class GroupThresholds:
    """How nodes are labelled from cached scores (not part of any cache key: relabelling is free)."""

    forget: float = 0.5  # threshold rule: importance on forget prompts, in units of the mean node
    retain: float = 0.5  # the same on retain prompts
    rule: Rule = Rule.SPECIFICITY
    tau: float = 2.0  # specificity rule: the ratio a node must clear
    floor: float = 0.5  # specificity rule: minimum importance, in units of a uniform share of the family
    resamples: int = 1000
    level: float = 0.95  # the intervals shown
    fdr: float = 0.05  # Benjamini-Hochberg level over all nodes tested
    min_users: int = 5  # an item row is tested on a side only when that many of its users' prompts contain it

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", parse_choice(Rule, self.rule, "group rule"))
        for side in ("forget", "retain", "floor"):
            value = getattr(self, side)
            if not value >= 0.0:
                raise SettingsError(f"the {side} threshold must be a number >= 0, got {value}")
        if not self.tau >= 1.0:
            raise SettingsError(f"tau must be a ratio >= 1, got {self.tau}")
        if self.resamples < 10 or not 0.5 <= self.level < 1.0:
            raise SettingsError("the bootstrap needs >= 10 resamples and a level in [0.5, 1)")
        if not 0.0 < self.fdr < 1.0:
            raise SettingsError(f"the false-discovery level must be in (0, 1), got {self.fdr}")
        if not (isinstance(self.min_users, int) and self.min_users >= 1):
            raise SettingsError(f"min_users must be a whole number >= 1, got {self.min_users!r}")

    def as_dict(self) -> dict:
        return {**asdict(self), "rule": self.rule.value}


@dataclass
class Specificity:
    """Per node (aligned with the names it was computed for)."""

    estimate: np.ndarray  # log(I_forget / I_retain)
    low: np.ndarray  # percentile interval at the thresholds' level
    high: np.ndarray
    forget_importance: np.ndarray  # share of its family on forget prompts
    retain_importance: np.ndarray
    uniform: np.ndarray  # 1 / family size: the unit of the floor
    se: np.ndarray  # bootstrap standard error of the log ratio (the tests' scale)

    @property
    def half_width(self) -> np.ndarray:
        return (self.high - self.low) / 2

    def p_values(self, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """One-sided p-values of "log ratio > log(tau)" (forget) and "< -log(tau)" (retain)."""
        log_tau = np.log(tau)
        with np.errstate(divide="ignore", invalid="ignore"):
            z_f = (self.estimate - log_tau) / self.se
            z_r = (-self.estimate - log_tau) / self.se
        # a zero standard error (every resample the same) decides by the estimate alone
        z_f = np.where(self.se > 0, z_f, np.where(self.estimate > log_tau, np.inf, -np.inf))
        z_r = np.where(self.se > 0, z_r, np.where(-self.estimate > log_tau, np.inf, -np.inf))
        return norm.sf(z_f), norm.sf(z_r)


@dataclass(frozen=True)
class SideScores:
    """One side's node scores summed per user: what the user bootstrap and the means need.

    Per-prompt scores are not kept: a whole request has ~7,000 prompts per side over ~1,700
    nodes (50 MB a side as float32), while a user's sums are all a user-level resample reads.
    """

    users: np.ndarray  # (U,) user ids
    counts: np.ndarray  # (U,) prompts per user
    abs_sums: np.ndarray  # (U, N) Σ |score| over the user's prompts
    sums: np.ndarray  # (U, N) Σ score

    @classmethod
    def from_prompts(cls, scores: torch.Tensor, users=None) -> "SideScores":
        """From per-prompt scores (prompts x nodes) and each prompt's user (None: every prompt its own)."""
        values = to_numpy(scores).astype(np.float64)
        users = np.arange(len(values)) if users is None else np.asarray(users)
        if len(users) != len(values):
            raise ValueError("one user per prompt")
        ids, inverse = np.unique(users, return_inverse=True)
        abs_sums, sums = np.zeros((len(ids), values.shape[1])), np.zeros((len(ids), values.shape[1]))
        np.add.at(abs_sums, inverse, np.abs(values))
        np.add.at(sums, inverse, values)
        return cls(ids, np.bincount(inverse, minlength=len(ids)).astype(np.float64), abs_sums, sums)

    @property
    def n_prompts(self) -> int:
        return int(self.counts.sum())

    def mean(self) -> np.ndarray:
        return self.sums.sum(0) / max(self.n_prompts, 1)


def _shares(abs_mean: np.ndarray, families: np.ndarray) -> np.ndarray:
    """Columns of abs_mean (..., N) divided by their family's total (per row)."""
    out = np.zeros_like(abs_mean)
    for f in np.unique(families):
        cols = families == f
        total = abs_mean[..., cols].sum(-1, keepdims=True)
        out[..., cols] = np.divide(abs_mean[..., cols], total, out=np.zeros_like(abs_mean[..., cols]),
                                   where=total > 0)
    return out


def _user_weights(n_users: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Resampling users with replacement = multinomial counts per user (resamples x users)."""
    return rng.multinomial(n_users, np.full(n_users, 1 / n_users), size=resamples).astype(np.float64)


def specificity(forget: SideScores | torch.Tensor, retain: SideScores | torch.Tensor, families: np.ndarray,
                resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Specificity:
    """Importances and log-ratio with a percentile bootstrap over users (per side, seeded).

    A bare tensor of per-prompt scores counts every prompt as its own user."""
    forget = forget if isinstance(forget, SideScores) else SideScores.from_prompts(forget)
    retain = retain if isinstance(retain, SideScores) else SideScores.from_prompts(retain)
    if forget.n_prompts == 0 or retain.n_prompts == 0:
        raise ValueError("specificity needs prompts on both sides")
    families = np.asarray(families)
    _, inverse, counts = np.unique(families, return_inverse=True, return_counts=True)
    sizes = counts[inverse].astype(np.float64)
    eps = EPS_SHARE / sizes
    ratio = lambda fs, rs: np.log((fs + eps) / (rs + eps))  # noqa: E731
    f_sums, f_counts, r_sums, r_counts = forget.abs_sums, forget.counts, retain.abs_sums, retain.counts
    f_share = _shares(f_sums.sum(0) / f_counts.sum(), families)
    r_share = _shares(r_sums.sum(0) / r_counts.sum(), families)
    rng = np.random.default_rng(seed)
    # a resample's mean |score| per node = (weights @ user sums) / (weights @ user prompt counts)
    wf, wr = _user_weights(len(f_counts), resamples, rng), _user_weights(len(r_counts), resamples, rng)
    boot = ratio(_shares((wf @ f_sums) / (wf @ f_counts)[:, None], families),
                 _shares((wr @ r_sums) / (wr @ r_counts)[:, None], families))
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    return Specificity(ratio(f_share, r_share), low, high, f_share, r_share, 1 / sizes, boot.std(0))


@dataclass(frozen=True)
class Decisions:
    """What the rule decided per node, beside the labels: eligibility and the BH-adjusted p-values."""

    q_forget: np.ndarray  # NaN where the node was not tested on that side
    q_retain: np.ndarray
    tested: int  # hypotheses in the BH family


def _adjusted(p: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, int]:
    q = np.full(len(p), np.nan)
    if eligible.any():
        q[eligible] = false_discovery_control(p[eligible], method="bh")
    return q, int(eligible.sum())


def decide(spec: Specificity, thresholds: GroupThresholds, present_forget: np.ndarray | None = None,
           present_retain: np.ndarray | None = None) -> Decisions:
    """BH over every (node, side) test whose node clears the floor and the presence minimum on that side."""
    floor = thresholds.floor * spec.uniform
    f_ok = spec.forget_importance >= floor
    r_ok = spec.retain_importance >= floor
    if present_forget is not None:
        f_ok &= present_forget >= thresholds.min_users
    if present_retain is not None:
        r_ok &= present_retain >= thresholds.min_users
    p_f, p_r = spec.p_values(thresholds.tau)
    eligible = np.concatenate([f_ok, r_ok])
    q, tested = _adjusted(np.concatenate([p_f, p_r]), eligible)
    n = len(p_f)
    return Decisions(q[:n], q[n:], tested)


def label_by_specificity(names: list[str], spec: Specificity, thresholds: GroupThresholds,
                         present_forget: np.ndarray | None = None, present_retain: np.ndarray | None = None
                         ) -> dict[str, Group]:
    """Labels from the FDR-controlled tests (`present_*`: users per side whose prompts hold the node;
    None for nodes present in every prompt)."""
    d = decide(spec, thresholds, present_forget, present_retain)
    floor = thresholds.floor * spec.uniform
    f_ok, r_ok = spec.forget_importance >= floor, spec.retain_importance >= floor
    labels = {}
    for i, name in enumerate(names):
        if d.q_forget[i] <= thresholds.fdr:
            labels[name] = Group.FORGET
        elif d.q_retain[i] <= thresholds.fdr:
            labels[name] = Group.RETAIN
        elif f_ok[i] and r_ok[i]:
            labels[name] = Group.SHARED
        else:
            labels[name] = Group.INACTIVE
    return labels


def normalised_importance(scores: torch.Tensor, families: np.ndarray | None = None) -> torch.Tensor:
    """|score| over the mean |score| of its family (1.0 = an average node)."""
    magnitude = scores.abs().cpu().double()  # on the host: MPS has no float64
    families = np.zeros(len(magnitude), dtype=int) if families is None else np.asarray(families)
    out = torch.zeros_like(magnitude)
    for f in np.unique(families):
        cols = torch.as_tensor(families == f)
        mean = magnitude[cols].mean()
        if mean > 0:
            out[cols] = magnitude[cols] / mean
    return out


def label_modules(names: list[str], forget_scores: torch.Tensor, retain_scores: torch.Tensor,
                  thresholds: GroupThresholds = GroupThresholds(), families: np.ndarray | None = None
                  ) -> dict[str, Group]:
    """The threshold rule on mean scores (one threshold per side, no interval)."""
    f = normalised_importance(forget_scores, families) >= thresholds.forget
    r = normalised_importance(retain_scores, families) >= thresholds.retain
    table = {(True, False): Group.FORGET, (False, True): Group.RETAIN,
             (True, True): Group.SHARED, (False, False): Group.INACTIVE}
    return {name: table[(bool(fi), bool(ri))] for name, fi, ri in zip(names, f, r)}


def members(labels: dict[str, Group], group: Group) -> set[str]:
    return {name for name, g in labels.items() if g is group}


def jaccard(a: set, b: set) -> float | None:
    """|a ∩ b| / |a ∪ b|; None when both are empty (agreeing on nothing is not stability)."""
    union = a | b
    return len(a & b) / len(union) if union else None


def group_stability(labelings: list[dict[str, Group]]) -> dict[str, float | None]:
    """Mean pairwise Jaccard of each group's members across labelings, over pairs where the group
    is not empty on both sides; None ("empty") when it is empty in every pair."""
    if len(labelings) < 2:
        raise ValueError("stability needs at least two labelings")
    out: dict[str, float | None] = {}
    for g in Group:
        values = [j for a, b in combinations(labelings, 2) if (j := jaccard(members(a, g), members(b, g))) is not None]
        out[g.value] = sum(values) / len(values) if values else None
    return out


def group_sizes(labelings: list[dict[str, Group]]) -> dict[str, list[int]]:
    """Each group's size in each labeling (reported next to its Jaccard)."""
    return {g.value: [len(members(lab, g)) for lab in labelings] for g in Group}


def block_group(owners: tuple[str, ...], groups: dict[str, Group]) -> Group:
    """The group whose rule a parameter block follows, from its owners' groups.

    One owner: its group. Several readers of one parameter (ln_1 and the attention output
    bias read by a layer's heads, GQA's shared K/V): task-shared when any reader is shared
    or readers are split between forget and retain, else the one active group among them,
    else inactive. Nodes without a group are inactive, the logits included: they are the
    metric's readout, never scored, so nothing says the forget signal lives there. Measured
    on the default model (users:0.1, Adam lr 3e-4, one epoch): letting them move as
    task-shared closed 1.71 of the forget-AUC gap at a test-AUC cost of 0.046 (the forget
    gradient mostly shifts the global Yes/No calibration: 55% of its squared norm is in the
    logits); frozen, 0.73 at a cost of 0.006.
    """
    found = {groups.get(o, Group.INACTIVE) for o in owners}
    active = found - {Group.INACTIVE}
    if Group.SHARED in active or {Group.FORGET, Group.RETAIN} <= active:
        return Group.SHARED
    return next(iter(active)) if active else Group.INACTIVE
