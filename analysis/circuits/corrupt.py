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
The prefix (user attributes) always stays. The target item stays too unless
`replace_target`: then it is replaced by the same draw as the history (the next unused
item of the donor's PPR order with the target's token length), so the target's own row is
scored; with the target kept, a genre request's own films (the target of every forget
prompt) score exactly 0 by construction.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse

from ..data.samples import HISTORY, TRAIN, Interactions
from ..errors import SettingsError
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


PPR_TOL = 1e-6  # networkx's default, per node: the iteration stops when the L1 change < N * tol
PPR_MAX_ITER = 100


@dataclass
class _GraphArrays:
    """The user-item graph as index arrays (built once per graph: networkx rebuilt its sparse matrix
    on every `nx.pagerank` call, 0.35 s of the 0.38 s each, measured)."""

    names: list[str]
    index: dict[str, int]
    transition: "scipy.sparse.csr_array"  # row-stochastic, rows of nodes without edges are 0
    dangling: np.ndarray
    items: np.ndarray  # catalogue item ids, sorted
    item_nodes: np.ndarray  # their node indices
    raters: dict[int, tuple[np.ndarray, np.ndarray]]  # item -> (rater node indices, ratings)


def _arrays(graph: nx.Graph) -> _GraphArrays:
    cached = graph.graph.get("_ppr_arrays")
    if cached is None:
        names = list(graph)
        index = {n: i for i, n in enumerate(names)}
        adjacency = nx.to_scipy_sparse_array(graph, nodelist=names, weight=None, dtype=float, format="csr")
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
        items = np.array(sorted(int(n[1:]) for n in names if n.startswith("i")))
        raters = {}
        for item in items:
            nbrs = graph[f"i{item}"]
            raters[int(item)] = (np.array([index[n] for n in nbrs], dtype=np.int64),
                                 np.array([nbrs[n]["rating"] for n in nbrs], dtype=np.float64))
        cached = _GraphArrays(names, index, (scipy.sparse.diags_array(inverse) @ adjacency).tocsr(), degree == 0,
                              items, np.array([index[f"i{i}"] for i in items], dtype=np.int64), raters)
        graph.graph["_ppr_arrays"] = cached
    return cached


def personalized_pagerank(graph: nx.Graph, sources: list[str], alpha: float = PPR_ALPHA) -> np.ndarray:
    """(n_sources, n_nodes) PageRank personalised on each source node, all sources in one power
    iteration: networkx's algorithm (uniform start, dangling mass to the personalisation, stop at
    L1 change < N * 1e-6), checked equal to `nx.pagerank` in tests/test_request.py."""
    a = _arrays(graph)
    n = len(a.names)
    p = np.zeros((len(sources), n))
    p[np.arange(len(sources)), [a.index[s] for s in sources]] = 1.0
    x = np.full((len(sources), n), 1.0 / n)
    for _ in range(PPR_MAX_ITER):
        last = x
        x = alpha * ((a.transition.T @ x.T).T + x[:, a.dangling].sum(1, keepdims=True) * p) + (1 - alpha) * p
        if np.abs(x - last).sum(1).max() < n * PPR_TOL:
            return x
    raise RuntimeError(f"personalized PageRank did not converge in {PPR_MAX_ITER} iterations")


class PPRSampler:
    """Personalized PageRank item distributions of a fixed, seeded pool of donor users."""

    def __init__(self, graph: nx.Graph, donors: list[int]) -> None:
        self.graph = graph
        self.donors = donors
        self._arrays = _arrays(graph)
        rank = personalized_pagerank(graph, [f"u{d}" for d in donors])
        self._rank = {d: rank[k] for k, d in enumerate(donors)}
        self._cdf: dict[tuple, tuple[np.ndarray, np.ndarray] | None] = {}
        self._distinct: dict[int, tuple[float, ...]] = {}

    def distribution(self, donor: int) -> tuple[np.ndarray, np.ndarray]:
        """Catalogue items and their PPR mass from the donor."""
        return self._arrays.items, self._rank[donor][self._arrays.item_nodes]

    def rating(self, donor: int, item: int, rng: np.random.Generator, accept=lambda r: True) -> float | None:
        """A rating of `item` by one of its raters, drawn by the raters' PPR mass from the donor.

        Only ratings that `accept` allows are drawn (None when there is none).
        """
        nodes, ratings = self._arrays.raters[int(item)]
        allowed = tuple(v for v in self._values(int(item)) if accept(v))  # a handful of distinct values
        key = (donor, int(item), allowed)
        if key not in self._cdf:  # the same donors draw the same popular items again and again
            ok = np.isin(ratings, allowed)
            self._cdf[key] = (np.cumsum(self._rank[donor][nodes[ok]] + 1e-12), ratings[ok]) if ok.any() else None
        if self._cdf[key] is None:
            return None
        cdf, ok_ratings = self._cdf[key]
        pick = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)
        return float(ok_ratings[pick])

    def _values(self, item: int) -> tuple[float, ...]:
        if item not in self._distinct:
            self._distinct[item] = tuple(float(v) for v in np.unique(self._arrays.raters[item][1]))
        return self._distinct[item]


def _weighted_order(items: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order that draws items without replacement with probability ∝ weight (Gumbel top-k)."""
    keep = weights > 0
    keys = np.log(weights[keep]) + rng.gumbel(size=int(keep.sum()))
    return items[keep][np.argsort(-keys)]


def _fill_slots(history: np.ndarray, order: np.ndarray, length) -> list[int]:
    """Give each history slot the first unused item in `order` with the same token length; a slot with
    none (a title longer than any other the donor reaches) keeps its item, so its row scores 0 on that
    prompt, as a kept target does. Scoring the whole request met such a prompt (a 40-token title in a
    tiny title vocabulary) where a 256-prompt sample had not."""
    used: set[int] = set()
    out = []
    for item in history:
        want = length(item)
        choice = next((int(c) for c in order if c not in used and length(c) == want), int(item))
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
                     graph: nx.Graph | None = None, seed: int = 0, n_donors: int = 16,
                     replace_target: bool = False) -> PromptSet:
    """Clean and corrupted prompts for sample rows; the corruption is seeded and reproducible."""
    corruption = Corruption(corruption)
    if replace_target and corruption in (Corruption.SHUFFLE, Corruption.MEAN):
        raise SettingsError(f"target replacement needs a drawn counterfactual (ppr, ppr-items, random), not {corruption.value}"
                            + (" (mean ablation scores the target already)" if corruption is Corruption.MEAN else ""))
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
            order = _weighted_order(cand, weights, rng)
            new_items = _fill_slots(items, order, item_len)
            new_target = int(target)
            if replace_target:  # the next unused item of the target's token length; none (titles): kept
                taken = set(new_items)
                new_target = next((int(c) for c in order if c not in taken and item_len(c) == item_len(target)),
                                  int(target))
            if corruption is Corruption.PPR:  # same token count as the rating it replaces, else keep it
                ratings = np.array([_or(sampler.rating(donor, i, rng, lambda x, r=r: rating_len(x) == rating_len(r)), r)
                                    for i, r in zip(new_items, ratings)])
        corrupt.append(builder.render(int(user), new_items, ratings,
                                      new_target if corruption is not Corruption.SHUFFLE else int(target)))
        if len(corrupt[-1]) != len(clean[-1]):
            raise ValueError("a corrupted prompt must have the clean prompt's length")
    return PromptSet(rows.reset_index(drop=True), clean, None if corruption is Corruption.MEAN else corrupt,
                     rows["label"].to_numpy().astype(np.int64), corruption, roles)
