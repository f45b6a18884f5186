"""User + item bias baseline: smoothed like-rates added in logit space.

score(u, i) = logit(p_u) + logit(p_i) - logit(p), with p the global like-rate and
p_u = (likes_u + a p) / (n_u + a) (same for items with b). It sees exactly the
training interactions the recommender sees; a and b are chosen on validation AUC.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metrics import auc

GRID = (1.0, 3.0, 10.0, 30.0, 100.0)


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


@dataclass
class BiasBaseline:
    user_logit: dict[int, float]
    item_logit: dict[int, float]
    global_logit: float
    smoothing: tuple[float, float]

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = np.array([self.user_logit.get(int(x), self.global_logit) for x in users])
        i = np.array([self.item_logit.get(int(x), self.global_logit) for x in items])
        return u + i - self.global_logit


def _fit(training: pd.DataFrame, a: float, b: float) -> BiasBaseline:
    p = float(training["label"].mean())
    by_user = training.groupby("user_id")["label"].agg(["sum", "count"])
    by_item = training.groupby("item_id")["label"].agg(["sum", "count"])
    pu = (by_user["sum"] + a * p) / (by_user["count"] + a)
    pi = (by_item["sum"] + b * p) / (by_item["count"] + b)
    return BiasBaseline(
        dict(zip(pu.index.tolist(), _logit(pu.to_numpy()).tolist())),
        dict(zip(pi.index.tolist(), _logit(pi.to_numpy()).tolist())),
        float(_logit(p)),
        (a, b),
    )


def fit_bias_baseline(training: pd.DataFrame, valid: pd.DataFrame) -> BiasBaseline:
    """Fit on `training` rows (user_id, item_id, label); pick smoothing by AUC on `valid`."""
    best, best_auc = None, -1.0
    for a in GRID:
        for b in GRID:
            model = _fit(training, a, b)
            value = auc(valid["label"].to_numpy(), model.score(valid["user_id"].to_numpy(), valid["item_id"].to_numpy()))
            if value > best_auc:
                best, best_auc = model, value
    assert best is not None
    return best
