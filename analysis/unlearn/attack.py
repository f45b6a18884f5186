"""The matched membership attack: forgotten users against users no model ever saw.

The older attack (mia.py) compares forget training samples with test samples. The split is
chronological, and later samples are easier (the original's loss on the forgotten users'
validation samples is 0.516 against 0.563 on their training samples), so it partly learns
"early or late in a time line". This one compares like with like:

* the never-seen users (data/samples.py; no model trains on them) are split by a fixed seed
  into a fitting half and a scoring half;
* the attacker (mia.fit_attacker: logistic regression on loss, confidence and signed score)
  is fitted on retained samples (members) against the fitting half's samples *of the same
  phase* (the place the split rule gives a row in its user's time line);
* it scores the request's samples against the scoring half's samples of that phase (for a
  genre request, only the genre's). AUC 0.5: the forgotten look like never-seen users.

For the retrain both sides are users it never saw, so it scores about 0.5 by construction;
the original shows what it memorised. The interval resamples users (all their samples go
together: a user's samples are not independent), with `scipy.stats.bootstrap`.

Phase `train` is the headline (the samples a model was trained on). Phase `valid` (the
forgotten users' validation samples: never a label, but the user was seen) is what the
retrain-free choice of strength reads (strength.py): it never touches the retrain or the
test set. Interaction-level requests have no forgotten *users*, so their valid phase is
not defined.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from ..data.forget import ForgetSet
from ..data.samples import TEST, TRAIN, VALID, Interactions
from ..errors import SettingsError
from ..metrics import auc
from ..model.recommender import Recommender
from ..model.sequences import PromptBuilder
from .mia import features, fit_attacker

PHASES = (TRAIN, VALID)
CAP = 2000  # members and fitting non-members per phase (seeded): the attacker has three features
HALF_SEED = 15_485_863  # the never-seen users' split into fitting and scoring halves: fixed per dataset
ROW_SEED = 0
RESAMPLES = 1000
LEVEL = 0.95
PARTS = ("members", "fit_unseen", "forgotten", "unseen")


@dataclass(frozen=True)
class AttackRows:
    """The four row sets of one phase; scores for them come from each model."""

    phase: str
    members: pd.DataFrame  # seen and not forgotten: label 1 when fitting
    fit_unseen: pd.DataFrame  # the never-seen fitting half: label 0 when fitting
    forgotten: pd.DataFrame  # the request's rows in this phase: the attacked side
    unseen: pd.DataFrame  # the never-seen scoring half, filtered like the request

    def sets(self) -> dict[str, pd.DataFrame]:
        return {f"attack_{self.phase}_{part}": getattr(self, part) for part in PARTS}


@dataclass(frozen=True)
class AttackResult:
    auc: float
    low: float
    high: float
    per_user: dict[int, float]  # forgotten user -> share of never-seen users they out-score (0.5: typical)

    @classmethod
    def from_record(cls, auc: float, low: float | None) -> "AttackResult":
        """An attack read back from a stored run (its AUC and interval's low end; None: no interval)."""
        return cls(auc, float("nan") if low is None else low, float("nan"), {})

    @property
    def indistinguishable(self) -> bool:
        """The interval reaches 0.5 (or lies below it: nothing left that looks seen)."""
        return self.low <= 0.5


def _covered_items(forget: ForgetSet, rows: pd.DataFrame) -> np.ndarray:
    """Rows whose item the request covers (a genre request), all rows otherwise."""
    if forget.spec.level != "genre":
        return np.ones(len(rows), dtype=bool)
    items = forget.interactions.data.items
    genre = items.loc[items["genres"].map(lambda gs: forget.spec.genre in gs), "item_id"]
    return rows["item_id"].isin(genre).to_numpy()


def covered(forget: ForgetSet, rows: pd.DataFrame) -> np.ndarray | None:
    """Which seen rows of a phase the request would have removed had they been trained on."""
    if forget.spec.level == "interactions":
        return None
    hit = _covered_items(forget, rows)
    users = forget.users if forget.spec.level == "users" else forget.spec.user_ids
    if users:
        hit &= rows["user_id"].isin(users).to_numpy()
    return hit


def forget_unseen_rows(forget: ForgetSet) -> pd.DataFrame | None:
    """The request's validation and test samples (never trained on): does forgetting reach beyond the samples
    the forget loss pushed on? None for an interaction-level request (its forgotten rows have no unseen kin)."""
    inter = forget.interactions
    rows = inter.frame[inter.frame["split"].isin((VALID, TEST))]
    hit = covered(forget, rows)
    return None if hit is None or not hit.any() else rows[hit]


def _cap(rows: pd.DataFrame) -> pd.DataFrame:
    return rows if len(rows) <= CAP else rows.sample(CAP, random_state=ROW_SEED).sort_index()


def never_seen_halves(interactions: Interactions) -> tuple[frozenset[int], frozenset[int]]:
    """The never-seen users split (seeded) into the attacker's fitting half and the scoring half."""
    users = np.array(sorted(interactions.never_seen_user_ids))
    order = np.random.default_rng(HALF_SEED).permutation(len(users))
    fit = users[order[: len(users) // 2]]
    return frozenset(fit.tolist()), frozenset(users.tolist()) - frozenset(fit.tolist())


def attack_rows(forget: ForgetSet, phase: str) -> AttackRows | None:
    """The phase's row sets, or None where the attack is not defined (fewer than 2 never-seen users per
    half's need, an interaction-level request's valid phase, or an empty side)."""
    inter = forget.interactions
    fit_users, score_users = never_seen_halves(inter)
    if not fit_users or not score_users:
        return None
    frame = inter.frame
    if phase == TRAIN:
        forgotten = forget.forget_samples
        members = frame[(frame["split"] == TRAIN).to_numpy() & ~forget.mask]
    else:
        rows = inter.split(phase)
        hit = covered(forget, rows)
        if hit is None:
            return None
        forgotten, members = rows[hit], rows[~hit]
    unseen = inter.never_seen(phase)
    fit_unseen = unseen[unseen["user_id"].isin(fit_users)]
    scored = unseen[unseen["user_id"].isin(score_users)]
    scored = scored[_covered_items(forget, scored)]
    out = AttackRows(phase, _cap(members), _cap(fit_unseen), forgotten, scored)
    return out if all(len(getattr(out, p)) for p in PARTS) else None


def _by_user(rows: pd.DataFrame, scores: np.ndarray) -> list[np.ndarray]:
    codes, _ = pd.factorize(rows["user_id"], sort=True)
    order = np.argsort(codes, kind="stable")
    return np.split(scores[order], np.flatnonzero(np.diff(codes[order])) + 1)


class ResampledAuc:
    """The AUC of forgotten against never-seen scores when whole users are resampled, for many resamples at once.

    The AUC of a pooled sample is the Mann-Whitney U over n_pos * n_neg, and U is a sum over pairs of users:
    wins[i, j] counts the pairs (a of forgotten user i, b of unseen user j) with a > b, ties as a half. A resample
    that draws user i c_i times and user j d_j times has U = c @ wins @ d and n_pos = c @ sizes. Every term is a
    half-integer below 2**53, so this equals pooling the resampled users and ranking them (metrics.auc) bit for
    bit (tested), at one matrix product per resample instead of a sort of ~10k scores: the 6 attacks of a study
    cell's comparison bootstrapped 1,000 times took 8.4 s of its 31.8 s (profiled), now well under a second.
    """

    def __init__(self, forgotten: list[np.ndarray], unseen: list[np.ndarray]) -> None:
        pooled = np.concatenate(forgotten)
        owner = np.repeat(np.arange(len(forgotten)), [len(s) for s in forgotten])
        self.wins = np.empty((len(forgotten), len(unseen)))
        for j, scores in enumerate(unseen):
            ordered = np.sort(scores)
            below = np.searchsorted(ordered, pooled, "left")
            tied = np.searchsorted(ordered, pooled, "right") - below
            self.wins[:, j] = np.bincount(owner, weights=below + 0.5 * tied, minlength=len(forgotten))
        self.forgotten_sizes = np.array([len(s) for s in forgotten], float)
        self.unseen_sizes = np.array([len(s) for s in unseen], float)

    @staticmethod
    def _draws(indices: np.ndarray, n: int) -> np.ndarray:
        """How often each of n users was drawn, per resample (indices: (..., drawn) user positions)."""
        flat = np.asarray(indices, dtype=np.int64).reshape(-1, np.shape(indices)[-1])
        counts = np.bincount((flat + n * np.arange(len(flat))[:, None]).ravel(), minlength=n * len(flat))
        return counts.reshape(*np.shape(indices)[:-1], n).astype(float)

    def __call__(self, forgotten_idx: np.ndarray, unseen_idx: np.ndarray, axis: int = -1) -> np.ndarray:
        """scipy.stats.bootstrap's vectorised statistic: resampled user positions along the last axis."""
        c, d = self._draws(forgotten_idx, len(self.forgotten_sizes)), self._draws(unseen_idx, len(self.unseen_sizes))
        u = np.einsum("...i,ij,...j->...", c, self.wins, d)
        return u / ((c @ self.forgotten_sizes) * (d @ self.unseen_sizes))


NOT_DEFINED = ("the retrain-free rule reads forgotten *users* (or a genre's samples) against never-seen users; "
               "an interaction-level request has neither, and it needs never-seen users on both attack halves")


class AttackStop:
    """`stop="auto"`: a run ends at the first check where its forgotten users are indistinguishable from
    never-seen users on the validation-period attack (the retrain-free rule of strength.py, applied while
    the run goes). Checked every EVERY steps: one check scores ~3,500 prompts (about 2 s on the default
    model on 2 cores), so checking every step would cost more than the steps."""

    EVERY = 10

    def __init__(self, interactions: Interactions, original: Recommender, forget: ForgetSet,
                 asked_by: str = "--stop auto") -> None:
        rows = attack_rows(forget, VALID)
        if rows is None:
            raise SettingsError(f"{asked_by}: {NOT_DEFINED}")
        builder = PromptBuilder(original.fmt, interactions)
        self.rows, self.original = rows, original
        self.prompts = {name: builder.prompts(part) for name, part in rows.sets().items()}

    def check(self, model) -> AttackResult:
        rec = Recommender(model, self.original.tokenizer, self.original.fmt, self.original.meta)
        return matched_attack(self.rows, {name: rec.score_prompts(p) for name, p in self.prompts.items()})


def matched_attack(rows: AttackRows, scores: dict[str, np.ndarray], seed: int = 0) -> AttackResult:
    """Fit on members vs the fitting half, score the request's rows vs the scoring half; interval over users."""
    sets = rows.sets()
    feats = {part: features(scores[name], sets[name]["label"].to_numpy()) for part, name in zip(PARTS, sets)}
    attack = fit_attacker(feats["members"], feats["fit_unseen"])
    forgotten, unseen = attack(feats["forgotten"]), attack(feats["unseen"])
    value = auc(np.r_[np.ones(len(forgotten)), np.zeros(len(unseen))], np.r_[forgotten, unseen])
    f_users, u_users = _by_user(rows.forgotten, forgotten), _by_user(rows.unseen, unseen)
    if len(f_users) > 1 and len(u_users) > 1:
        ci = bootstrap((np.arange(len(f_users)), np.arange(len(u_users))), ResampledAuc(f_users, u_users),
                       n_resamples=RESAMPLES, confidence_level=LEVEL, method="percentile", vectorized=True,
                       rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    else:  # one user on a side: no spread over users to resample
        low, high = float("nan"), float("nan")
    means_u = np.array([s.mean() for s in u_users])
    users = sorted(rows.forgotten["user_id"].unique().tolist())
    per_user = {int(u): float(np.mean((s.mean() > means_u) + 0.5 * (s.mean() == means_u)))
                for u, s in zip(users, f_users)}
    return AttackResult(value, low, high, per_user)
