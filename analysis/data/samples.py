"""Interactions in time order, the TALLRec/E2URec sample definition and the split.

A *sample* is a rating with at least H earlier ratings by the same user; the first H
ratings of a user only ever serve as history. Each user's samples, in time order
(ties by item id), are split: the last 10% test, the 10% before validation, the rest
train. The split is computed once on the full data and never depends on a deletion
request, so every run is scored on exactly the same test prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError, UnknownIdError
from .schema import RatingsData, likes

HISTORY = "history"  # first H ratings of a user: context only
TRAIN, VALID, TEST = "train", "valid", "test"
TRAINING_SPLITS = (HISTORY, TRAIN)  # interactions the model is trained on (labels or context)


@dataclass(frozen=True)
class Interactions:
    """All ratings with their per-user position and split.

    frame columns: user_id, item_id, rating, timestamp, label (rating >= 4, schema.likes), pos (0-based
    index in the user's time order), split (history/train/valid/test). Sorted by
    (user_id, pos), with a RangeIndex that other modules use as interaction ids.
    """

    data: RatingsData
    frame: pd.DataFrame
    history: int
    dropped_users: tuple[int, ...]

    @property
    def samples(self) -> pd.DataFrame:
        return self.frame[self.frame["split"] != HISTORY]

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
        return frozenset(self.frame["user_id"].unique().tolist())

    @property
    def item_ids(self) -> frozenset[int]:
        return frozenset(self.data.items["item_id"].tolist())

    def summary(self) -> dict:
        counts = self.frame["split"].value_counts().to_dict()
        return {
            "history_length": self.history,
            "samples": {s: int(counts.get(s, 0)) for s in (TRAIN, VALID, TEST)},
            "history_only": int(counts.get(HISTORY, 0)),
            "dropped_users": len(self.dropped_users),
            "train_like_rate": round(float(self.split(TRAIN)["label"].mean()), 4),
        }


def build_interactions(data: RatingsData, history: int = 10, fraction: float = 0.1) -> Interactions:
    """Order each user's ratings in time and assign splits.

    Users with fewer than history + 3 ratings cannot be in train, valid and test, so they
    are dropped (and counted) rather than silently breaking "every user is in train".
    """
    if history < 1:
        raise DataError(f"history length must be >= 1, got {history}")
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
    r["split"] = split
    r["label"] = likes(r["rating"]).astype(np.int8)
    frame = r[["user_id", "item_id", "rating", "timestamp", "label", "pos", "split"]]
    return Interactions(data=data, frame=frame, history=history, dropped_users=dropped)
