"""Metrics (analysis/metrics.py) and the user+item bias baseline (analysis/baselines.py)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.baselines import GRID, _fit, fit_bias_baseline
from analysis.data.samples import TEST, VALID
from analysis.metrics import Classification, accuracy, auc, classification, hit_ndcg_at_k, jsd, logloss, sigmoid


def brute_auc(labels, scores) -> float:
    pos = scores[labels.astype(bool)]
    neg = scores[~labels.astype(bool)]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


# ---------------------------------------------------------------- auc


@pytest.mark.parametrize("seed", range(8))
def test_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    labels = rng.integers(0, 2, size=n)
    labels[0], labels[1] = 0, 1
    scores = rng.integers(-3, 4, size=n).astype(float)  # few distinct values: many ties
    if seed % 2:
        scores = scores + rng.normal(size=n) * (rng.random(n) < 0.5)  # mix of tied and distinct
    assert auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)


def test_auc_hand_values():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert auc(np.array([0, 1, 0, 1]), np.zeros(4)) == 0.5
    assert auc(np.array([0, 1, 1]), np.array([1.0, 1.0, 2.0])) == 0.75
    assert auc([True, False], [2, 1]) == 1.0  # lists and bools accepted


@pytest.mark.parametrize("labels", [np.ones(5), np.zeros(5), np.array([1])])
def test_auc_nan_for_one_class(labels):
    assert math.isnan(auc(labels, np.arange(len(labels), dtype=float)))
    assert math.isnan(classification(labels, np.arange(len(labels), dtype=float)).auc)


# ---------------------------------------------------------------- accuracy / logloss


def test_accuracy_hand_values():
    labels = np.array([1, 0, 1, 0])
    assert accuracy(labels, np.array([2.0, -1.0, 0.5, -0.1])) == 1.0
    assert accuracy(labels, np.array([-2.0, 1.0, -0.5, 0.1])) == 0.0
    assert accuracy(labels, np.array([1.0, 1.0, -1.0, -1.0])) == 0.5
    # a score of exactly 0 means "No" (p = 0.5 is not a like)
    assert accuracy(np.array([1, 0]), np.array([0.0, 0.0])) == 0.5


def test_logloss_hand_values():
    assert logloss(np.array([1, 0]), np.array([0.0, 0.0])) == pytest.approx(math.log(2))
    expected = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 - 1 / (1 + math.exp(1)))) / 2
    assert logloss(np.array([1, 0]), np.array([2.0, -1.0])) == pytest.approx(expected)
    # confident and wrong is clipped, not infinite
    value = logloss(np.array([1]), np.array([-1000.0]))
    assert math.isfinite(value) and value == pytest.approx(-math.log(1e-7))
    assert logloss(np.array([1]), np.array([1000.0])) == pytest.approx(-math.log(1 - 1e-7))


def test_classification_bundle():
    out = classification(np.array([0, 1, 1, 0]), np.array([-1.0, 2.0, 0.5, 0.3]))
    assert out.n == 4
    assert out.auc == 1.0 and out.acc == 0.75
    assert Classification.from_json(out.to_json()) == out  # the layout a model's metadata stores
    assert out.logloss == pytest.approx(logloss(np.array([0, 1, 1, 0]), np.array([-1.0, 2.0, 0.5, 0.3])))


def test_sigmoid_stable():
    s = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert np.all(np.isfinite(s))
    assert s.tolist() == [0.0, 0.5, 1.0]


# ---------------------------------------------------------------- jsd


def test_jsd_identical_is_zero():
    x = np.random.default_rng(0).normal(size=1000) * 5
    assert jsd(x, x) == pytest.approx(0.0, abs=1e-15)
    assert jsd(np.array([50.0]), np.array([50.0])) == pytest.approx(0.0, abs=1e-12)


def test_jsd_symmetric_and_bounded():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a = rng.normal(size=200) * rng.uniform(0.1, 60)
        b = rng.normal(size=200) * rng.uniform(0.1, 60)
        v = jsd(a, b)
        assert v == pytest.approx(jsd(b, a), abs=1e-12)
        assert 0.0 <= v <= 1.0
    # per pair too, including extreme scores
    a = rng.normal(size=2000) * 40
    b = rng.normal(size=2000) * 40
    for x, y in zip(a, b):
        v = jsd(np.array([x]), np.array([y]))
        assert -1e-12 <= v <= 1.0 + 1e-12


def test_jsd_opposite_certain_predictions_is_one_bit():
    assert jsd(np.array([50.0]), np.array([-50.0])) == pytest.approx(1.0, abs=1e-9)
    assert jsd(np.array([50.0, -50.0]), np.array([-50.0, 50.0])) == pytest.approx(1.0, abs=1e-9)
    # half the pairs identical, half opposite: mean is half a bit
    assert jsd(np.array([50.0, 50.0]), np.array([50.0, -50.0])) == pytest.approx(0.5, abs=1e-9)


def test_jsd_hand_value():
    # p = 0.5 vs certain Yes: JSD = H(M) - (H(P)+H(Q))/2 with M = (0.75, 0.25)
    h = lambda ps: -sum(p * math.log2(p) for p in ps if p > 0)  # noqa: E731
    expected = h([0.75, 0.25]) - 0.5 * (h([0.5, 0.5]) + 0.0)
    assert jsd(np.array([0.0]), np.array([50.0])) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- hit / ndcg


def test_hit_ndcg_single_relevant():
    scores = np.array([0.9, 0.8, 0.1, 0.5])
    rel = np.array([0, 1, 0, 0])
    assert hit_ndcg_at_k(rel, scores, k=1) == (0.0, 0.0)
    hit, ndcg = hit_ndcg_at_k(rel, scores, k=2)
    assert hit == 1.0 and ndcg == pytest.approx(1 / math.log2(3))
    assert hit_ndcg_at_k(rel, -scores + 1.0, k=1) == (0.0, 0.0)  # relevant is now 3rd
    assert hit_ndcg_at_k(np.array([1, 0, 0]), np.array([3.0, 2.0, 1.0]), k=10) == (1.0, 1.0)


def test_hit_ndcg_multiple_relevant():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    rel = np.array([1, 0, 1, 0, 1])
    hit, ndcg = hit_ndcg_at_k(rel, scores, k=3)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert hit == 1.0 and ndcg == pytest.approx(dcg / idcg)
    # k larger than the list
    hit, ndcg = hit_ndcg_at_k(rel, scores, k=50)
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(6)
    assert ndcg == pytest.approx(dcg / idcg)
    # nothing relevant
    assert hit_ndcg_at_k(np.zeros(5), scores, k=3) == (0.0, 0.0)


def test_hit_ndcg_ties_broken_pessimistically():
    # constant scores: the relevant items are ranked after every non-relevant one
    rel = np.zeros(20, dtype=int)
    rel[[0, 7, 19]] = 1
    assert hit_ndcg_at_k(rel, np.zeros(20), k=10) == (0.0, 0.0)
    assert hit_ndcg_at_k(rel, np.full(20, 3.0), k=17) == (0.0, 0.0)
    hit, ndcg = hit_ndcg_at_k(rel, np.zeros(20), k=18)  # first relevant lands at rank 18
    assert hit == 1.0 and ndcg == pytest.approx((1 / math.log2(19)) / (1 + 1 / math.log2(3) + 1 / math.log2(4)))
    # relevant items not outnumbered within k: they fill the places after the non-relevant ones
    rel = np.array([1] * 15 + [0] * 5)
    hit, ndcg = hit_ndcg_at_k(rel, np.zeros(20), k=10)
    dcg = sum(1 / math.log2(r + 1) for r in range(6, 11))
    idcg = sum(1 / math.log2(r + 1) for r in range(1, 11))
    assert hit == 1.0 and ndcg == pytest.approx(dcg / idcg)
    # a tie only among some items: the relevant one loses the tie but beats lower scores
    hit, ndcg = hit_ndcg_at_k(np.array([0, 1, 0, 0]), np.array([1.0, 1.0, 1.0, 0.0]), k=2)
    assert (hit, ndcg) == (0.0, 0.0)
    hit, ndcg = hit_ndcg_at_k(np.array([0, 1, 0, 0]), np.array([1.0, 1.0, 1.0, 0.0]), k=3)
    assert hit == 1.0 and ndcg == pytest.approx(0.5)


# ---------------------------------------------------------------- bias baseline


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "label"])


def test_bias_user_who_likes_everything_scores_higher():
    rows = [(1, i, 1) for i in range(10)] + [(2, i, 0) for i in range(10)] + [(3, i, i % 2) for i in range(10)]
    training = frame(rows)
    valid = frame([(3, 0, 0), (3, 1, 1), (1, 2, 1), (2, 3, 0)])
    model = fit_bias_baseline(training, valid)
    for item in range(10):
        s = model.score(np.array([1, 2, 3]), np.array([item, item, item]))
        assert s[0] > s[2] > s[1]
    # an item everybody likes scores higher than one nobody likes, for the same user
    rows = [(u, 0, 1) for u in range(10)] + [(u, 1, 0) for u in range(10)]
    model = fit_bias_baseline(frame(rows), frame([(0, 0, 1), (1, 1, 0)]))
    s = model.score(np.array([5, 5]), np.array([0, 1]))
    assert s[0] > s[1]
    # unknown users/items fall back to the global rate
    s = model.score(np.array([999]), np.array([999]))
    assert s[0] == pytest.approx(model.global_logit)


def test_bias_smoothing_chosen_by_validation():
    # user A: 3/3 likes (few ratings); user B: 90/100 likes. Light smoothing ranks A above B,
    # heavy smoothing (towards the global rate) ranks B above A.
    rows = [(1, 100 + i, 1) for i in range(3)]
    rows += [(2, 200 + i, int(i < 90)) for i in range(100)]
    rows += [(3, 300 + i, int(i < 40)) for i in range(100)]  # pulls the global rate down
    training = frame(rows)
    item = 300
    prefer_b = frame([(1, item, 0), (2, item, 1)])
    prefer_a = frame([(1, item, 1), (2, item, 0)])

    model_b = fit_bias_baseline(training, prefer_b)
    model_a = fit_bias_baseline(training, prefer_a)
    sb = model_b.score(np.array([1, 2]), np.array([item, item]))
    sa = model_a.score(np.array([1, 2]), np.array([item, item]))
    assert sb[1] > sb[0]
    assert sa[0] > sa[1]
    assert model_b.smoothing[0] > model_a.smoothing[0]
    assert model_a.smoothing[0] in GRID and model_b.smoothing[0] in GRID

    # the chosen smoothing has the best validation AUC over the whole grid
    for valid, model in ((prefer_b, model_b), (prefer_a, model_a)):
        y = valid["label"].to_numpy()
        u, i = valid["user_id"].to_numpy(), valid["item_id"].to_numpy()
        best = max(auc(y, _fit(training, a, b).score(u, i)) for a in GRID for b in GRID)
        assert auc(y, model.score(u, i)) == best == 1.0


def test_bias_baseline_on_real_ml100k(ml100k_interactions):
    inter = ml100k_interactions
    model = fit_bias_baseline(inter.training, inter.split(VALID))
    test = inter.split(TEST)
    value = auc(test["label"].to_numpy(), model.score(test["user_id"].to_numpy(), test["item_id"].to_numpy()))
    assert value > 0.75
    # the choice maximises validation AUC over the grid
    valid = inter.split(VALID)
    y, u, i = valid["label"].to_numpy(), valid["user_id"].to_numpy(), valid["item_id"].to_numpy()
    chosen = auc(y, model.score(u, i))
    for a, b in ((1.0, 1.0), (100.0, 100.0), (1.0, 100.0), (100.0, 1.0)):
        assert chosen >= auc(y, _fit(inter.training, a, b).score(u, i))


def test_pareto_front_on_hand_made_points():
    from analysis.pareto import dominates, pareto_front

    # (JSD to retrain: lower is better, test AUC: higher is better)
    points = [(0.1, 0.80), (0.2, 0.85), (0.05, 0.70), (0.2, 0.80), (0.1, 0.80), (0.3, 0.84), (0.01, 0.60)]
    # (0.2, 0.80) is dominated by (0.1, 0.80); (0.3, 0.84) by (0.2, 0.85); the duplicate (0.1, 0.80) stays
    assert pareto_front(points) == [0, 1, 2, 4, 6]
    assert dominates((0.1, 0.8), (0.2, 0.8)) and not dominates((0.1, 0.8), (0.1, 0.8))
    assert pareto_front([]) == [] and pareto_front([(1.0, 0.5)]) == [0]


def test_classification_of_an_empty_set_is_nan_not_a_warning():
    import math
    import warnings

    from analysis.metrics import classification

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = classification(np.array([]), np.array([]))
    assert out.n == 0 and all(math.isnan(v) for v in (out.auc, out.acc, out.logloss))
