"""Counterfactual prompts for patching: same length, same user, same target, other history.

The default (after CURE) replaces each history pair by one drawn by Personalized PageRank
from *another* user's neighbourhood in the user-item graph: the item by the donor's PPR
over items, its rating by the PPR weight of the users who rated that item. So the
counterfactual is a plausible history of a different taste, still in-distribution.

Why ratings move too: on the default model, replacing only the items (ratings kept;
`ppr-items`) leaves the mean metric unchanged (0.715 -> 0.705 on 512 train prompts)
because a user's ratings, i.e. how generous they are, carry most of what the history
says; a real other user's history halves it (0.715 -> 0.371), and this default takes
it to 0.432. A corruption that moves
the metric this little makes every circuit look faithful, so the default moves both.
Shuffled items, random items (ratings kept) and mean ablation are the other options.
The prefix (user attributes) and the target item always stay.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum

import networkx as nx
import numpy as np
import pandas as pd

from ..data.samples import HISTORY, TRAIN, Interactions
from ..model.sequences import PromptBuilder
from .nodes import TOKEN_ROLES, Role, VocabRoles

PPR_ALPHA = 0.85  # the usual damping: ~6 steps of expected walk length from the donor


class Corruption(str, Enum):
    PPR = "ppr"  # items and ratings from another user's PPR neighbourhood
    PPR_ITEMS = "ppr-items"  # PPR items, the user's own ratings kept
    SHUFFLE = "shuffle"
    RANDOM = "random"
    MEAN = "mean"  # no corrupted prompts: every node's output is replaced by its mean over the prompt set


@dataclass
class PromptSet:
    """Clean prompts with their labels and (unless mean ablation) corrupted counterparts."""

    rows: pd.DataFrame  # the sample rows (user_id, pos, item_id, label)
    clean: list[list[int]]
    corrupt: list[list[int]] | None
    labels: np.ndarray  # 1 = liked; the metric's sign
    corruption: Corruption
    roles: list[np.ndarray] | None = None  # per prompt: each position's token-role code (nodes.TOKEN_ROLES)

    def __len__(self) -> int:
        return len(self.clean)

    def subset(self, idx) -> "PromptSet":
        idx = list(idx)
        return PromptSet(self.rows.iloc[idx], [self.clean[i] for i in idx],
                         None if self.corrupt is None else [self.corrupt[i] for i in idx],
                         self.labels[idx], self.corruption, None if self.roles is None else [self.roles[i] for i in idx])

    def concat(self, other: "PromptSet") -> "PromptSet":
        if self.corruption != other.corruption:
            raise ValueError("cannot join prompt sets with different corruptions")
        corrupt = None if self.corrupt is None else self.corrupt + other.corrupt
        roles = None if self.roles is None or other.roles is None else self.roles + other.roles
        return PromptSet(pd.concat([self.rows, other.rows]), self.clean + other.clean, corrupt,
                         np.concatenate([self.labels, other.labels]), self.corruption, roles)


def user_item_graph(interactions: Interactions) -> nx.Graph:
    """Bipartite graph of users ("u<id>") and items ("i<id>") over history and training ratings."""
    frame = interactions.frame
    seen = frame[frame["split"].isin([HISTORY, TRAIN])]
    g = nx.Graph()
    g.add_nodes_from((f"i{i}" for i in interactions.data.items["item_id"]), kind="item")
    g.add_edges_from((f"u{u}", f"i{i}", {"rating": float(r)})
                     for u, i, r in zip(seen["user_id"], seen["item_id"], seen["rating"]))
    return g


class PPRSampler:
    """Personalized PageRank item distributions of a fixed, seeded pool of donor users."""

    def __init__(self, graph: nx.Graph, donors: list[int]) -> None:
        self.graph = graph
        self.donors = donors
        self._items = np.array(sorted(int(n[1:]) for n in graph if n.startswith("i")))
        self._dist: dict[int, np.ndarray] = {}

        self._pr: dict[int, dict[str, float]] = {}

    def _pagerank(self, donor: int) -> dict[str, float]:
        if donor not in self._pr:
            self._pr[donor] = nx.pagerank(self.graph, alpha=PPR_ALPHA, personalization={f"u{donor}": 1.0})
        return self._pr[donor]

    def distribution(self, donor: int) -> tuple[np.ndarray, np.ndarray]:
        """Catalogue items and their PPR mass from the donor."""
        if donor not in self._dist:
            pr = self._pagerank(donor)
            self._dist[donor] = np.array([pr.get(f"i{i}", 0.0) for i in self._items])
        return self._items, self._dist[donor]

    def rating(self, donor: int, item: int, rng: np.random.Generator, accept=lambda r: True) -> float | None:
        """A rating of `item` by one of its raters, drawn by the raters' PPR mass from the donor.

        Only ratings that `accept` allows are drawn (None when there is none).
        """
        pr = self._pagerank(donor)
        raters = self.graph[f"i{item}"]
        names = [n for n in raters if accept(raters[n]["rating"])]
        if not names:
            return None
        weights = np.array([pr.get(n, 0.0) for n in names]) + 1e-12
        pick = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        return raters[pick]["rating"]


def _weighted_order(items: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order that draws items without replacement with probability ∝ weight (Gumbel top-k)."""
    keep = weights > 0
    keys = np.log(weights[keep]) + rng.gumbel(size=int(keep.sum()))
    return items[keep][np.argsort(-keys)]


def _fill_slots(history: np.ndarray, order: np.ndarray, length) -> list[int]:
    """Give each history slot the first unused item in `order` with the same token length."""
    used: set[int] = set()
    out = []
    for item in history:
        want = length(item)
        choice = next((int(c) for c in order if c not in used and length(c) == want), None)
        if choice is None:
            raise ValueError(f"no replacement item of token length {want} for item {item}")
        used.add(choice)
        out.append(choice)
    return out


def position_roles(builder: PromptBuilder, user: int, items, ratings, target: int) -> np.ndarray:
    """Each position's token role (its code in nodes.TOKEN_ROLES): the prefix's words and
    attributes, then item and rating tokens, then the target item. A title prompt's prefix
    writes the attributes inside a sentence, so all of it counts as prompt words."""
    fmt = builder.fmt
    vocab = _word_roles(builder)
    prefix = builder.prefix(int(user))
    codes = [TOKEN_ROLES.index(vocab.role[t]) if vocab is not None and t < len(vocab.role) else 0 for t in prefix]
    for item, rating in zip(items, ratings):
        codes += [_ITEMS] * len(fmt.item_ids(int(item))) + [_RATINGS] * len(fmt.rating_ids(float(rating)))
    codes += [_ITEMS] * len(fmt.item_ids(int(target)))
    return np.array(codes, dtype=np.int64)


_ITEMS, _RATINGS = TOKEN_ROLES.index(Role.ITEMS), TOKEN_ROLES.index(Role.RATINGS)


def _word_roles(builder: PromptBuilder) -> VocabRoles | None:
    if getattr(builder.fmt, "kind", None) != "word":
        return None
    if not hasattr(builder, "_vocab_roles"):
        builder._vocab_roles = VocabRoles.from_vocab(builder.fmt.tokenizer.get_vocab(), ())
    return builder._vocab_roles


def _or(value, default):
    return default if value is None else value


def build_prompt_set(builder: PromptBuilder, rows: pd.DataFrame, corruption: Corruption | str,
                     graph: nx.Graph | None = None, seed: int = 0, n_donors: int = 16) -> PromptSet:
    """Clean and corrupted prompts for sample rows; the corruption is seeded and reproducible."""
    corruption = Corruption(corruption)
    rng = np.random.default_rng(seed)
    fmt = builder.fmt
    # token counts, so that a replacement never changes the prompt's length (titles, BPE ratings)
    item_len = functools.cache(lambda item: len(fmt.item_ids(int(item))))
    rating_len = functools.cache(lambda rating: len(fmt.rating_ids(float(rating))))

    catalog = builder.interactions.data.items["item_id"].to_numpy()
    sampler = None
    if corruption in (Corruption.PPR, Corruption.PPR_ITEMS):
        graph = graph if graph is not None else user_item_graph(builder.interactions)
        users = np.array(sorted(int(n[1:]) for n in graph if n.startswith("u")))
        sampler = PPRSampler(graph, rng.choice(users, size=min(n_donors, len(users)), replace=False).tolist())

    clean, corrupt, roles = [], [], []
    for user, pos, target in zip(rows["user_id"].to_numpy(), rows["pos"].to_numpy(), rows["item_id"].to_numpy()):
        items, ratings = builder.history_at(int(user), int(pos))
        clean.append(builder.render(int(user), items, ratings, int(target)))
        roles.append(position_roles(builder, int(user), items, ratings, int(target)))
        if len(roles[-1]) != len(clean[-1]):
            raise ValueError("position roles must cover the prompt")
        if corruption is Corruption.MEAN:
            continue
        if corruption is Corruption.SHUFFLE:
            new_items = items[rng.permutation(len(items))]
        else:
            exclude = set(items.tolist()) | {int(target)}
            donor = None
            if sampler is not None:
                donor = int(rng.choice([d for d in sampler.donors if d != int(user)]))
                cand, weights = sampler.distribution(donor)
            else:
                cand, weights = catalog, np.ones(len(catalog))
            weights = np.where(np.isin(cand, list(exclude)), 0.0, weights)
            new_items = _fill_slots(items, _weighted_order(cand, weights, rng), item_len)
            if corruption is Corruption.PPR:  # same token count as the rating it replaces, else keep it
                ratings = np.array([_or(sampler.rating(donor, i, rng, lambda x, r=r: rating_len(x) == rating_len(r)), r)
                                    for i, r in zip(new_items, ratings)])
        corrupt.append(builder.render(int(user), new_items, ratings, int(target)))
        if len(corrupt[-1]) != len(clean[-1]):
            raise ValueError("a corrupted prompt must have the clean prompt's length")
    return PromptSet(rows.reset_index(drop=True), clean, None if corruption is Corruption.MEAN else corrupt,
                     rows["label"].to_numpy().astype(np.int64), corruption, roles)
