"""Interactions in time order, the TALLRec/E2URec sample definition and the split.

A *sample* is a rating with at least H earlier ratings by the same user; the first H
ratings of a user only ever serve as history. Each user's samples, in time order
(ties by item id), are split: the last 10% test, the 10% before validation, the rest
train. The split is computed once on the full data and never depends on a deletion
request, so every run is scored on exactly the same test prompts.

A seeded share of users (5% by default: 45 of ML-100K's 943) is *never seen*: none of their
ratings is trained on, by the original or any retrain, and no deletion request can name
them. Their rows carry split `unseen`, so every filter on history/train/valid/test leaves
them out; `phase` says where each row would fall in the split rule (for every user), so a
forgotten user's training samples can be matched with never-seen users' samples at the same
place in their time lines. They are what a model that never saw a user looks like: the
yardstick for membership (analysis/unlearn/attack.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError, UnknownIdError
from .schema import RatingsData, likes

HISTORY = "history"  # first H ratings of a user: context only
TRAIN, VALID, TEST = "train", "valid", "test"
UNSEEN = "unseen"  # every row of a never-seen user (its place in the rule: the `phase` column)
NEVER_SEEN_SEED = 104_729  # fixed: the never-seen users are one set for every model of a dataset
TRAINING_SPLITS = (HISTORY, TRAIN)  # interactions the model is trained on (labels or context)


@dataclass(frozen=True)
class Interactions:
    """All ratings with their per-user position and split.

    frame columns: user_id, item_id, rating, timestamp, label (rating >= 4, schema.likes), pos (0-based
    index in the user's time order), split (history/train/valid/test, or unseen for a never-seen user's
    rows), phase (history/train/valid/test by the split rule, for every user). Sorted by
    (user_id, pos), with a RangeIndex that other modules use as interaction ids.
    """

    data: RatingsData
    frame: pd.DataFrame
    history: int
    dropped_users: tuple[int, ...]

    @property
    def samples(self) -> pd.DataFrame:
        """Seen users' samples (train, valid and test)."""
        return self.frame[self.frame["split"].isin((TRAIN, VALID, TEST))]

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name]

    @property
    def training(self) -> pd.DataFrame:
        return self.frame[self.frame["split"].isin(TRAINING_SPLITS)]

    def check_user(self, user_id: int) -> None:
        if user_id not in self.user_ids:
            raise UnknownIdError(
                f"unknown user {user_id}: {self.data.name} has users "
                f"{min(self.user_ids)}..{max(self.user_ids)} ({len(self.user_ids)} in all)"
            )

    def check_item(self, item_id: int) -> None:
        if item_id not in self.item_ids:
            raise UnknownIdError(f"unknown item {item_id}: not in {self.data.name}'s items file")

    @property
    def user_ids(self) -> frozenset[int]:
        """Every user with samples, never-seen ones included (their prompts can be scored and traced)."""
        return frozenset(self.frame["user_id"].unique().tolist())

    @property
    def never_seen_user_ids(self) -> frozenset[int]:
        return frozenset(self.frame.loc[self.frame["split"] == UNSEEN, "user_id"].unique().tolist())

    @property
    def seen_user_ids(self) -> frozenset[int]:
        """Users the models train on: the only ones a deletion request can name."""
        return self.user_ids - self.never_seen_user_ids

    def never_seen(self, phase: str) -> pd.DataFrame:
        """Never-seen users' rows that the split rule puts in `phase` (train: matched with training samples)."""
        f = self.frame
        return f[(f["split"] == UNSEEN) & (f["phase"] == phase)]

    @property
    def item_ids(self) -> frozenset[int]:
        return frozenset(self.data.items["item_id"].tolist())

    def summary(self) -> "SplitSummary":
        counts = self.frame["split"].value_counts().to_dict()
        return SplitSummary(self.history, int(counts.get(TRAIN, 0)), int(counts.get(VALID, 0)),
                            int(counts.get(TEST, 0)), int(counts.get(HISTORY, 0)), len(self.never_seen_user_ids),
                            int(counts.get(UNSEEN, 0)), len(self.dropped_users),
                            round(float(self.split(TRAIN)["label"].mean()), 4))


@dataclass(frozen=True)
class SplitSummary:
    """Samples per split and who was left out (Overview, `cure prepare`)."""
    history_length: int
    train: int
    valid: int
    test: int
    history_only: int
    never_seen_users: int
    never_seen_ratings: int
    dropped_users: int
    train_like_rate: float


def build_interactions(data: RatingsData, history: int = 10, fraction: float = 0.1,
                       never_seen: float = 0.05) -> Interactions:
    """Order each user's ratings in time and assign splits.

    Users with fewer than history + 3 ratings cannot be in train, valid and test, so they
    are dropped (and counted) rather than silently breaking "every user is in train".
    `never_seen`: the share of the remaining users held out of all training (seeded,
    round half up: 0 on a handful of users); at least one user is always seen.
    """
    if history < 1:
        raise DataError(f"history length must be >= 1, got {history}")
    if not 0.0 <= never_seen < 1.0:
        raise DataError(f"the never-seen share must be in [0, 1), got {never_seen:g}")
    r = data.ratings.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort").reset_index(drop=True)
    r["pos"] = r.groupby("user_id").cumcount()
    n_by_user = r.groupby("user_id")["pos"].transform("size")
    too_few = n_by_user < history + 3
    dropped = tuple(sorted(r.loc[too_few, "user_id"].unique().tolist()))
    r = r[~too_few].reset_index(drop=True)
    if r.empty:
        raise DataError(f"{data.name}: no user has at least {history + 3} ratings (history length {history})")
    n_samples = (n_by_user[~too_few].to_numpy() - history)
    sample_idx = r["pos"].to_numpy() - history  # -1.. for history rows
    test_n = np.maximum(1, np.floor(fraction * n_samples + 0.5)).astype(int)
    valid_n = test_n.copy()
    split = np.full(len(r), TRAIN, dtype=object)
    split[sample_idx < 0] = HISTORY
    split[sample_idx >= n_samples - test_n] = TEST
    split[(sample_idx >= n_samples - test_n - valid_n) & (sample_idx < n_samples - test_n)] = VALID
    r["phase"] = split
    users = np.array(sorted(r["user_id"].unique()))
    n_unseen = min(int(np.floor(never_seen * len(users) + 0.5)), len(users) - 1)
    unseen = np.random.default_rng(NEVER_SEEN_SEED).choice(users, size=n_unseen, replace=False)
    r["split"] = np.where(r["user_id"].isin(unseen).to_numpy(), UNSEEN, split)
    r["label"] = likes(r["rating"]).astype(np.int8)
    frame = r[["user_id", "item_id", "rating", "timestamp", "label", "pos", "split", "phase"]]
    return Interactions(data=data, frame=frame, history=history, dropped_users=dropped)
