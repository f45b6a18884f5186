"""Metrics on scores (logit differences) and labels. Pure numpy, no model code."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the rank statistic; NaN when only one class is present."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # ties get their average rank (Mann-Whitney U)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean((np.asarray(scores) > 0) == np.asarray(labels).astype(bool)))


def logloss(labels: np.ndarray, scores: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(sigmoid(scores), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True)
class Classification:
    """Yes/No classification of one sample set: AUC, accuracy at score 0, log loss, and how many samples (0: the
    set was empty, every number NaN; e.g. "test of retained users" when a request touches every user)."""
    auc: float
    acc: float
    logloss: float
    n: int

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Classification":
        return cls(d["auc"], d["acc"], d["logloss"], d["n"])


def classification(labels: np.ndarray, scores: np.ndarray) -> Classification:
    if len(labels) == 0:
        return Classification(float("nan"), float("nan"), float("nan"), 0)
    return Classification(auc(labels, scores), accuracy(labels, scores), logloss(labels, scores), int(len(labels)))


def jsd(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """Mean Jensen-Shannon divergence (bits, in [0, 1]) between two models' Yes/No distributions."""
    pa = np.clip(sigmoid(scores_a), 1e-12, 1 - 1e-12)
    pb = np.clip(sigmoid(scores_b), 1e-12, 1 - 1e-12)
    P = np.stack([pa, 1 - pa], axis=-1)
    Q = np.stack([pb, 1 - pb], axis=-1)
    M = 0.5 * (P + Q)
    kl = lambda a, b: np.sum(a * (np.log2(a) - np.log2(b)), axis=-1)  # noqa: E731
    return max(0.0, float(np.mean(0.5 * kl(P, M) + 0.5 * kl(Q, M))))  # clamp rounding noise below 0


def hit_ndcg_at_k(relevant: np.ndarray, scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k of one candidate list; `relevant` is a 0/1 array aligned with scores.

    Ties are broken against the relevant items (pessimistic), so a constant scorer
    earns no credit.
    """
    rel = np.asarray(relevant).astype(bool)
    order = np.lexsort((rel.astype(int), -np.asarray(scores)))  # score desc, then non-relevant first
    top = rel[order][:k]
    hit = float(top.any())
    dcg = float(np.sum(top / np.log2(np.arange(2, len(top) + 2))))
    ideal = int(min(rel.sum(), k))
    idcg = float(np.sum(1.0 / np.log2(np.arange(2, ideal + 2)))) if ideal else 0.0
    return hit, (dcg / idcg if idcg else 0.0)
