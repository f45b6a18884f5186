"""Top-k recommendations for one user: every unrated item scored after their latest history."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import SettingsError
from .metrics import sigmoid
from .model.recommender import Recommender
from .model.sequences import PromptBuilder
from .workspace import Workspace


@dataclass(frozen=True)
class Recommendation:
    """One item of a user's ranked list."""
    rank: int
    item_id: int
    title: str
    score: float  # the Yes-No logit difference
    p_like: float


@dataclass(frozen=True)
class RankChange(Recommendation):
    """An item of the user's list after unlearning, with where the original and the retrain rank it."""
    rank_before: int | None = None  # None: not in the original's top-k
    change: int | None = None  # rank_before - rank (> 0: moved up); None exactly when rank_before is None
    rank_retrain: int | None = None


def top_k(rec: Recommender, ws: Workspace, user_id: int, k: int = 10, exclude_rated: bool = True,
          builder: PromptBuilder | None = None) -> list[Recommendation]:
    """`builder`: one PromptBuilder for many calls (building one indexes every user's time line)."""
    ws.interactions.check_user(user_id)
    if k < 1:
        raise SettingsError(f"k must be at least 1, got {k}")
    frame = ws.interactions.frame
    rated = set(frame.loc[frame["user_id"] == user_id, "item_id"].tolist())
    items = [i for i in sorted(ws.interactions.item_ids) if not (exclude_rated and i in rated)]
    builder = builder or PromptBuilder(rec.fmt, ws.interactions)
    scores = rec.score_candidates(builder.latest_context(user_id), [rec.fmt.item_ids(i) for i in items])
    order = np.argsort(-scores, kind="stable")[:k]
    return [Recommendation(r + 1, int(items[j]), ws.title(items[j]), float(scores[j]), float(sigmoid(scores[j])))
            for r, j in enumerate(order)]


def rank_changes(before: Recommender, after: Recommender, ws: Workspace, user_id: int, k: int = 10,
                 gold: Recommender | None = None) -> list[RankChange]:
    """The user's top-k after unlearning, each with its rank before (None: was not in the top-k before)
    and, given the retrain (`gold`), the rank the retrain gives it.

    Ranks are looked up among all unrated items, so an item that moved from 14 to 3 shows +11
    rather than "new".
    """
    every = len(ws.interactions.item_ids)
    builder = PromptBuilder(after.fmt, ws.interactions)  # the three models share one prompt format
    rank_before = {r.item_id: r.rank for r in top_k(before, ws, user_id, every, builder=builder)}
    rank_gold = ({r.item_id: r.rank for r in top_k(gold, ws, user_id, every, builder=builder)}
                 if gold is not None else {})
    out = []
    for row in top_k(after, ws, user_id, k, builder=builder):
        was = rank_before.get(row.item_id)
        out.append(RankChange(**asdict(row), rank_before=was, change=None if was is None else was - row.rank,
                              rank_retrain=rank_gold.get(row.item_id)))
    return out


def candidate_prompt(rec: Recommender, ws: Workspace, user_id: int, item_id: int) -> list[int]:
    """The prompt that scores `item_id` for `user_id` after their latest history."""
    ws.interactions.check_user(user_id)
    ws.interactions.check_item(int(item_id))
    return PromptBuilder(rec.fmt, ws.interactions).latest_context(user_id) + rec.fmt.item_ids(int(item_id))
