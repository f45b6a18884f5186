"""Token sequences for training (many answers per sequence) and for single prompts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..data.samples import TRAIN, Interactions
from .prompts import PromptFormat


@dataclass
class Sequence:
    user_id: int
    ids: list[int]
    answer_positions: list[int]  # index of the token whose next-token logits answer
    labels: list[int]
    # Token counts of the unrated items at the end, each answered "No": each sees the ratings
    # before it and itself, never the other tail items, and sits where a next item would.
    tail: tuple[int, ...] = ()

    @property
    def prefix_length(self) -> int:
        return len(self.ids) - sum(self.tail)


class PromptBuilder:
    """Renders prompts for one interactions table with one prompt format.

    The canonical prompt of a sample (user, pos t) is the user's prefix, the pairs at
    positions t-H..t-1 of the *full* time line, and the target item. Training sequences
    instead come from the retained time line, so a forgotten interaction is neither a
    label nor context there.
    """

    def __init__(self, fmt: PromptFormat, interactions: Interactions) -> None:
        self.fmt = fmt
        self.interactions = interactions
        self.history = interactions.history
        users = interactions.data.users.set_index("user_id")
        self._users = users
        self._prefix: dict[int, list[int]] = {}
        self._pairs: dict[tuple[int, float], list[int]] = {}
        frame = interactions.frame
        bounds = frame.groupby("user_id").indices  # frame is sorted by (user_id, pos)
        self._timeline = {
            int(u): (frame["item_id"].to_numpy()[idx], frame["rating"].to_numpy()[idx]) for u, idx in bounds.items()
        }

    def prefix(self, user_id: int) -> list[int]:
        if user_id not in self._prefix:
            if user_id in self._users.index:
                row = self._users.loc[user_id]
            else:
                row = pd.Series({"age_group": "unknown", "gender": "unknown", "occupation": "unknown"})
            self._prefix[user_id] = self.fmt.prefix_ids(row)
        return self._prefix[user_id]

    def pair(self, item_id: int, rating: float) -> list[int]:
        """Memoised: a study renders the same few thousand (item, rating) pairs hundreds of thousands of
        times (706,077 renders, 28 s of a tiny study's 330 s, profiled); callers copy, never mutate."""
        key = (int(item_id), float(rating))
        ids = self._pairs.get(key)
        if ids is None:
            ids = self._pairs[key] = self.fmt.item_ids(item_id) + self.fmt.rating_ids(rating)
        return ids

    def history_at(self, user_id: int, pos: int) -> tuple[np.ndarray, np.ndarray]:
        """Items and ratings of the H pairs before position `pos` of the user's full time line."""
        items, ratings = self._timeline[int(user_id)]
        lo = max(0, pos - self.history)
        return items[lo:pos], ratings[lo:pos]

    def render(self, user_id: int, items, ratings, target: int | None = None) -> list[int]:
        """Prefix, the given (item, rating) pairs, then the target item if any."""
        ids = list(self.prefix(int(user_id)))
        for item, rating in zip(items, ratings):
            ids += self.pair(item, rating)
        return ids + (self.fmt.item_ids(target) if target is not None else [])

    def context(self, user_id: int, pos: int) -> list[int]:
        """Prefix plus the H pairs before position `pos` of the user's full time line."""
        return self.render(user_id, *self.history_at(user_id, pos))

    def latest_context(self, user_id: int, splits: tuple[str, ...] | None = None) -> list[int]:
        """Context for recommending next: the last H ratings (optionally only of some splits)."""
        frame = self.interactions.frame
        rows = frame[frame["user_id"] == user_id]
        if splits is not None:
            rows = rows[rows["split"].isin(splits)]
        return self.context(user_id, int(rows["pos"].max()) + 1)

    def prompts(self, rows: pd.DataFrame) -> list[list[int]]:
        """Canonical prompts (context + target item) for sample rows with user_id, pos, item_id."""
        return [
            self.context(u, p) + self.fmt.item_ids(i)
            for u, p, i in zip(rows["user_id"].to_numpy(), rows["pos"].to_numpy(), rows["item_id"].to_numpy())
        ]

    def training_sequences(self, retained: pd.DataFrame, per_sequence: int, offset: int, negatives: int = 0,
                           rng: np.random.Generator | None = None) -> list[Sequence]:
        """Cut each retained time line into sequences that answer up to `per_sequence` targets.

        Targets are training samples with at least H retained ratings before them. A
        sequence answering targets a..b-1 holds pairs a-H..b-1, so its first target sees
        exactly the canonical prompt and later ones see up to per_sequence-1 extra pairs.
        `offset` shifts the cut points so that, across epochs, each sample is sometimes
        the first target.

        With `negatives` > 0, each sequence also ends with its last target's rating and that
        many items the user never rated in `retained` (uniform, from `rng`), labelled 0: the
        only way the model learns that an unrated item is less likely to be liked than a rated
        one, which is what ranking against unrated candidates (HR@10) asks of it.
        """
        H, K = self.history, per_sequence
        out: list[Sequence] = []
        pool = np.array(sorted(self.interactions.item_ids)) if negatives else None
        for user_id, rows in retained.groupby("user_id", sort=True):
            items = rows["item_id"].to_numpy()
            ratings = rows["rating"].to_numpy()
            labels = rows["label"].to_numpy()
            is_target = rows["split"].to_numpy() == TRAIN
            n = len(items)
            if n <= H:
                continue
            cuts = [H] + list(range(H + (offset % K or K), n, K)) + [n]
            for a, b in zip(cuts[:-1], cuts[1:]):
                if not is_target[a:b].any():
                    continue
                ids = list(self.prefix(int(user_id)))
                answers, ys = [], []
                for j in range(a - H, b):
                    item_part = self.fmt.item_ids(items[j])
                    ids += item_part
                    if j >= a and is_target[j]:
                        answers.append(len(ids) - 1)
                        ys.append(int(labels[j]))
                    if j < b - 1 or negatives:  # without a tail, the last target's rating is never context
                        ids += self.fmt.rating_ids(ratings[j])
                tail = []
                if negatives:
                    for item in _unrated(pool, items, negatives, rng):
                        item_part = self.fmt.item_ids(item)  # one token (word format) or a title's tokens
                        ids += item_part
                        answers.append(len(ids) - 1)
                        ys.append(0)
                        tail.append(len(item_part))
                out.append(Sequence(int(user_id), ids, answers, ys, tuple(tail)))
        return out


def _unrated(pool: np.ndarray, rated: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct items of `pool` not in `rated` (rejection sampling: users rate a small share of items)."""
    picked = rng.choice(pool, size=min(len(pool), 4 * n + len(rated) // 8 + 8), replace=False)
    picked = picked[~np.isin(picked, rated)]
    return picked[:n]


def tail_attention(seqs: list[Sequence], width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive 4D attention mask and position ids for right-padded sequences with tails of unrated items.

    Prefix tokens attend causally; a tail item's tokens attend to their sequence's prefix and, causally,
    to their own item, and are positioned right after the prefix, so each unrated item sees exactly a
    canonical prompt (tested against scoring that prompt alone). Padding attends to itself only.
    """
    n = len(seqs)
    start = torch.arange(width).repeat(n, 1)  # first token of each token's own block (a prefix token's: 0)
    base = torch.zeros(n, width, dtype=torch.long)  # position of that block's first token
    for i, s in enumerate(seqs):
        a = s.prefix_length
        for length in s.tail:
            start[i, a : a + length] = a
            base[i, a : a + length] = s.prefix_length
            a += length
        start[i, : s.prefix_length] = 0
    q = torch.arange(width)
    prefix = torch.tensor([s.prefix_length for s in seqs])[:, None]
    length = torch.tensor([len(s.ids) for s in seqs])[:, None]
    qq, kk = q[None, :, None], q[None, None, :]
    own = (kk >= start[:, :, None]) & (kk <= qq)  # causal within the token's own block
    in_tail = (qq >= prefix[:, :, None]) & (qq < length[:, :, None])
    allowed = torch.where(qq < prefix[:, :, None], kk <= qq, in_tail & ((kk < prefix[:, None, :]) | own))
    allowed = allowed | (kk == qq)  # padding rows: attend to themselves, never NaN
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    positions = torch.where(q[None, :] < prefix, q[None, :], base + (q[None, :] - start))
    return mask[:, None], positions.contiguous()


def pad_batch(seqs: list[list[int]], pad_id: int, width: int | None = None) -> np.ndarray:
    """Right-pad (to `width`, default the longest): with causal attention, padding after a token never changes it."""
    width = width or max(len(s) for s in seqs)
    out = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out
