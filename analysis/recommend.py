"""Top-k recommendations for one user: every unrated item scored after their latest history."""
from __future__ import annotations

import numpy as np

from .metrics import sigmoid
from .model.recommender import Recommender
from .model.sequences import PromptBuilder
from .workspace import Workspace


def top_k(rec: Recommender, ws: Workspace, user_id: int, k: int = 10, exclude_rated: bool = True) -> list[dict]:
    ws.interactions.check_user(user_id)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    frame = ws.interactions.frame
    rated = set(frame.loc[frame["user_id"] == user_id, "item_id"].tolist())
    items = [i for i in sorted(ws.interactions.item_ids) if not (exclude_rated and i in rated)]
    builder = PromptBuilder(rec.fmt, ws.interactions)
    scores = rec.score_candidates(builder.latest_context(user_id), [rec.fmt.item_ids(i) for i in items])
    order = np.argsort(-scores, kind="stable")[:k]
    return [
        {"rank": r + 1, "item_id": int(items[j]), "title": ws.title(items[j]), "score": float(scores[j]),
         "p_like": float(sigmoid(scores[j]))}
        for r, j in enumerate(order)
    ]
