"""The sample definition and per-user chronological split (analysis/data/samples.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.data.samples import HISTORY, TEST, TRAIN, UNSEEN, VALID, build_interactions
from analysis.errors import DataError


def expected_eval_count(n_samples: int) -> int:
    """round(0.1 n), half rounded up (as the documented counts require), at least 1; exact integers."""
    return max(1, (n_samples + 5) // 10)


def check_split(inter, ratings: pd.DataFrame, history: int) -> None:
    """Every documented property of the split, checked independently of the implementation."""
    f = inter.frame
    assert list(f.columns) == ["user_id", "item_id", "rating", "timestamp", "label", "pos", "split", "phase"]
    assert isinstance(f.index, pd.RangeIndex) and f.index.start == 0 and f.index.step == 1
    assert set(f["split"].unique()) <= {HISTORY, TRAIN, VALID, TEST, UNSEEN}
    assert set(f["phase"].unique()) <= {HISTORY, TRAIN, VALID, TEST}
    # a never-seen user is never-seen in every row; everyone else's split is their phase
    unseen = f["split"] == UNSEEN
    assert (f[~unseen]["split"] == f[~unseen]["phase"]).all()
    assert not set(f.loc[unseen, "user_id"]) & set(f.loc[~unseen, "user_id"])
    assert inter.never_seen_user_ids == frozenset(f.loc[unseen, "user_id"].tolist())
    assert inter.seen_user_ids | inter.never_seen_user_ids == inter.user_ids and inter.seen_user_ids

    # sorted by (user_id, pos); pos is 0..n-1 per user
    assert (np.diff(f["user_id"].to_numpy()) >= 0).all()
    assert (f["pos"].to_numpy() == f.groupby("user_id").cumcount().to_numpy()).all()

    # nothing invented, nothing lost: the kept users' ratings exactly once each
    kept = ratings[ratings["user_id"].isin(inter.user_ids)]
    cols = ["user_id", "item_id", "rating", "timestamp"]
    a = f[cols].sort_values(cols).reset_index(drop=True)
    b = kept[cols].sort_values(cols).reset_index(drop=True).astype(a.dtypes.to_dict())
    pd.testing.assert_frame_equal(a, b)

    # position follows time, ties by item id
    key = f["timestamp"].to_numpy().astype(np.int64) * 10_000_000 + f["item_id"].to_numpy().astype(np.int64)
    same_user = f["user_id"].to_numpy()[1:] == f["user_id"].to_numpy()[:-1]
    assert (np.diff(key)[same_user] > 0).all()

    # label
    assert (f["label"].to_numpy() == (f["rating"].to_numpy() >= 4)).all()

    # per-user counts
    counts = f.groupby(["user_id", "phase"]).size().unstack(fill_value=0)
    for s in (HISTORY, TRAIN, VALID, TEST):
        if s not in counts:
            counts[s] = 0
    n = counts.sum(axis=1)
    n_samples = n - history
    assert (n >= history + 3).all()
    assert (counts[HISTORY] == history).all()
    expected = n_samples.map(expected_eval_count)
    assert (counts[TEST] == expected).all()
    assert (counts[VALID] == expected).all()
    assert (counts[TRAIN] == n_samples - 2 * expected).all()
    assert (counts[TRAIN] >= 1).all(), "every user must have training samples"

    # splits are contiguous blocks in time order: history < train < valid < test
    order = {HISTORY: 0, TRAIN: 1, VALID: 2, TEST: 3}
    rank = f["phase"].map(order).to_numpy()
    assert (np.diff(rank)[same_user] >= 0).all()
    # and chronological in timestamps (ties allowed, broken by item id as checked above)
    ts = f.groupby(["user_id", "phase"])["timestamp"].agg(["min", "max"]).unstack()
    assert (ts[("max", HISTORY)] <= ts[("min", TRAIN)]).all()
    assert (ts[("max", TRAIN)] <= ts[("min", VALID)]).all()
    assert (ts[("max", VALID)] <= ts[("min", TEST)]).all()

    # samples are exactly the ratings with >= H earlier ratings
    assert (inter.samples["pos"] >= history).all()
    assert (f.loc[f["phase"] == HISTORY, "pos"] < history).all()


# ---------------------------------------------------------------- real MovieLens-100K


def test_real_ml100k_counts(ml100k_interactions):
    inter = ml100k_interactions
    assert len(inter.user_ids) == 943
    assert inter.history == 10
    assert inter.dropped_users == ()
    s = inter.summary()
    # 47 of 943 users (5%, seeded) are never seen: their 3,783 ratings are in no split a model trains on
    assert (s.train, s.valid, s.test) == (69741, 8758, 8758)
    assert s.history_only == 8960
    assert s.never_seen_users == 47 and s.never_seen_ratings == 3783
    assert s.dropped_users == 0
    assert len(inter.samples) == 69741 + 2 * 8758
    assert len(inter.training) == 69741 + 8960
    assert len(inter.seen_user_ids) == 896 and len(inter.never_seen("train")) == 2641


def test_real_ml100k_split_properties(ml100k, ml100k_interactions):
    check_split(ml100k_interactions, ml100k.ratings, history=10)


def test_real_ml100k_deterministic_under_shuffle(ml100k, ml100k_interactions):
    from dataclasses import replace

    shuffled = ml100k.ratings.sample(frac=1.0, random_state=123).reset_index(drop=True)
    other = build_interactions(replace(ml100k, ratings=shuffled))
    pd.testing.assert_frame_equal(other.frame, ml100k_interactions.frame)
    assert other.dropped_users == ml100k_interactions.dropped_users


def test_real_ml100k_other_history_length(ml100k):
    inter = build_interactions(ml100k, history=20)
    check_split(inter, ml100k.ratings, history=20)
    assert len(inter.user_ids) + len(inter.dropped_users) == 943
    # ML-100K users have >= 20 ratings, so those with 20..22 are dropped at H=20
    n = ml100k.ratings.groupby("user_id").size()
    assert inter.dropped_users == tuple(sorted(n[n < 23].index.tolist()))
    assert len(inter.dropped_users) > 0


# ---------------------------------------------------------------- hand-made data

H = 3


def hand_rows():
    rows = []
    # user 1: exactly H+3 = 6 ratings (kept: 3 history, 1 train, 1 valid, 1 test), with timestamp ties
    rows += [(1, 10, 4, 100), (1, 5, 2, 100), (1, 7, 5, 50), (1, 3, 3, 200), (1, 1, 5, 300), (1, 2, 1, 300)]
    # user 2: H+2 = 5 ratings -> dropped
    rows += [(2, i, 4, 10 + i) for i in range(1, 6)]
    # user 3: 28 ratings -> 25 samples -> test = valid = round(2.5) = 3 (half up), train 19
    rows += [(3, 100 + i, 1 + (i % 5), 1000 + i // 2) for i in range(28)]
    # user 4: 2 ratings -> dropped
    rows += [(4, 1, 5, 1), (4, 2, 5, 2)]
    # user 5: 15 ratings -> 12 samples -> test = valid = 1, train 10; fractional rating
    rows += [(5, 200 + i, 3.5 if i % 2 else 3.0, 5000 - i) for i in range(15)]
    return rows


@pytest.fixture
def hand_data(make_ratings_data):
    return make_ratings_data(hand_rows())


def test_hand_made_exact_split(hand_data):
    inter = build_interactions(hand_data, history=H)
    f = inter.frame
    u1 = f[f["user_id"] == 1]
    assert u1["item_id"].tolist() == [7, 5, 10, 3, 1, 2]
    assert u1["split"].tolist() == [HISTORY] * 3 + [TRAIN, VALID, TEST]
    assert u1["label"].tolist() == [1, 0, 1, 0, 1, 0]
    assert u1["pos"].tolist() == list(range(6))

    u3 = f[f["user_id"] == 3]["split"].value_counts().to_dict()
    assert u3 == {HISTORY: 3, TRAIN: 19, VALID: 3, TEST: 3}
    u5 = f[f["user_id"] == 5]
    assert u5["split"].value_counts().to_dict() == {HISTORY: 3, TRAIN: 10, VALID: 1, TEST: 1}
    # timestamps decrease with i, so the last-rated item (i = 14) comes first
    assert u5["item_id"].tolist() == [214 - k for k in range(15)]
    assert u5["label"].tolist() == [0] * 15  # 3.0 and 3.5: a like needs >= 4 (half stars: 3.5 is not one)


def test_hand_made_dropped_users_are_counted(hand_data):
    inter = build_interactions(hand_data, history=H)
    assert inter.dropped_users == (2, 4)
    assert inter.user_ids == frozenset({1, 3, 5})
    assert inter.summary().dropped_users == 2
    check_split(inter, hand_data.ratings, history=H)


def test_hand_made_deterministic_under_shuffle(hand_data):
    from dataclasses import replace

    base = build_interactions(hand_data, history=H)
    for seed in range(5):
        shuffled = hand_data.ratings.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        other = build_interactions(replace(hand_data, ratings=shuffled), history=H)
        pd.testing.assert_frame_equal(other.frame, base.frame)
        assert other.dropped_users == base.dropped_users
        # and again: building twice from the same input is identical
        pd.testing.assert_frame_equal(build_interactions(replace(hand_data, ratings=shuffled), history=H).frame,
                                      base.frame)


@pytest.mark.parametrize("n_samples", [3, 4, 5, 9, 14, 15, 24, 25, 26, 35, 45, 104, 105])
def test_eval_count_rounding(make_ratings_data, n_samples):
    rows = [(1, i, 4, i) for i in range(H + n_samples)] + [(2, 1000 + i, 2, i) for i in range(H + 3)]
    inter = build_interactions(make_ratings_data(rows), history=H)
    counts = inter.frame[inter.frame["user_id"] == 1]["split"].value_counts()
    e = expected_eval_count(n_samples)
    assert counts[TEST] == e and counts[VALID] == e
    assert counts[TRAIN] == n_samples - 2 * e >= 1


def test_no_user_has_enough_ratings(make_ratings_data):
    data = make_ratings_data([(1, i, 4, i) for i in range(H + 2)])
    with pytest.raises(DataError, match="at least"):
        build_interactions(data, history=H)


def test_history_must_be_positive(hand_data):
    with pytest.raises(DataError, match="history"):
        build_interactions(hand_data, history=0)
