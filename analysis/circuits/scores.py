"""Per-prompt node scores of a deletion request, and the groups, intervals and stability read off them.

`NodeGroups` holds one `Draw` per sampling of the request: for each side, per-prompt
scores with each prompt's user, in *parts* that may come from different prompt sets.
The input part (embedding roles and item rows) is scored on the whole request (every
forget sample, an equally large seeded retain sample); the graph part (heads, MLPs,
neurons) on a seeded sample of prompts per side, since it needs the per-reader gradients.
Each family lies within one part, so shares and the user bootstrap are computed per part.

Draw 0 is the request as discovered; "prompt seed" draws redo everything with another seed
(counterfactuals, retain sample, module sample); "retain sample" draws keep draw 0's
forget side and draw another retain sample. Stability is reported over each kind.
Labels, intervals and stability are recomputed from the stored scores for any rule
settings, so moving tau, the floor or the FDR level never recomputes attribution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CacheError
from .groups import (Decisions, Group, GroupThresholds, SideScores, Specificity, decide, group_sizes, group_stability,
                     Rule, label_by_specificity, label_modules, specificity)
from .nodes import Kind, NodeTable
from .request import Presence
from .view import DrawStability, GroupedNode, GroupStability
from .view import Presence as NodeCounts  # the per-node record; request.Presence is the per-item bookkeeping
from .view import Specificity as NodeSpecificity  # one node's; groups.Specificity holds every node's arrays

SCORES = "scores.safetensors"
PROMPT_SEED, RETAIN_SAMPLE = "prompt seed", "retain sample"

FAMILY = {Kind.HEAD: 0, Kind.MLP: 0, Kind.ITEM_ROW: 1, Kind.NEURON: 2, Kind.ROLE: 3}
INPUT_KINDS = (Kind.ROLE, Kind.ITEM_ROW)  # scored at the input, over the whole request


def families_of(table: NodeTable, names: list[str]) -> np.ndarray:
    """0 = heads and MLPs (the computation), 1 = item rows (which make up emb:items), 2 = neurons (which
    make up the MLPs), 3 = embedding roles (which make up the input): importance is a share within one."""
    return np.array([FAMILY[table[n].kind] for n in names])


def score_parts(table: NodeTable) -> list[np.ndarray]:
    """Columns of table.scored in the input part (roles, item rows: the whole request) and in the graph
    part (heads, MLPs, neurons: a prompt sample)."""
    kinds = [table[n].kind for n in table.scored]
    return [np.array([i for i, k in enumerate(kinds) if (k in INPUT_KINDS) is inside], dtype=np.int64)
            for inside in (True, False)]


@dataclass
class Draw:
    """One sampling of the request: per side, one SideScores per part (columns: NodeGroups.parts)."""

    kind: str  # PROMPT_SEED or RETAIN_SAMPLE
    seed: int
    forget: list[SideScores]
    retain: list[SideScores]
    presence: Presence | None = None  # item rows (None when the table has none)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.seed}"


@dataclass
class NodeGroups:
    names: list[str]  # scored nodes, in table order
    kinds: list[str]
    titles: list[str]  # readable labels (item titles for rows)
    families: np.ndarray
    parts: list[np.ndarray]  # column indices of each part, together a partition of the names
    draws: list[Draw]
    thresholds: GroupThresholds = field(default_factory=GroupThresholds)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_table(cls, table: NodeTable, draws: list[Draw], thresholds: GroupThresholds) -> "NodeGroups":
        names = list(table.scored)
        return cls(names, [table[n].kind.value for n in names], [table[n].label or n for n in names],
                   families_of(table, names), score_parts(table), draws, thresholds)

    # --- reading ---------------------------------------------------------------------------
    @property
    def seeds(self) -> list[int]:
        return [d.seed for d in self.draws if d.kind == PROMPT_SEED]

    def _row_columns(self) -> np.ndarray:
        """Cached: `node_view` asks once per node, and a scan of ~3,400 kinds per node cost 38 s of a tiny
        study's 330 s (profiled)."""
        if "rows" not in self._cache:
            self._cache["rows"] = np.array([i for i, k in enumerate(self.kinds) if k == Kind.ITEM_ROW.value],
                                           dtype=np.int64)
        return self._cache["rows"]

    def _bootstrap(self, draw: int, thresholds: GroupThresholds) -> Specificity:
        """The intervals depend on the resamples and level only: relabelling with another tau, floor, FDR
        level or rule reuses them."""
        key = ("spec", draw, thresholds.resamples, thresholds.level)
        if key not in self._cache:
            d = self.draws[draw]
            n = len(self.names)
            out = {f: np.zeros(n) for f in ("estimate", "low", "high", "forget_importance", "retain_importance",
                                            "uniform", "se")}
            for cols, f, r in zip(self.parts, d.forget, d.retain):
                if len(cols) == 0:
                    continue
                part = specificity(f, r, self.families[cols], thresholds.resamples, thresholds.level)
                for name in out:
                    out[name][cols] = getattr(part, name)
            self._cache[key] = Specificity(**out)
        return self._cache[key]

    def presence(self, draw: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Users per side whose scored prompts hold each node (rows: counted; other nodes: every user);
        cached per draw like the decisions (callers must not write into the arrays)."""
        key = ("presence", draw)
        if key not in self._cache:
            f, r = self._count_presence(draw)
            f.flags.writeable = r.flags.writeable = False
            self._cache[key] = (f, r)
        return self._cache[key]

    def _count_presence(self, draw: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.draws[draw]
        f, r = np.zeros(len(self.names), dtype=np.int64), np.zeros(len(self.names), dtype=np.int64)
        for cols, fs, rs in zip(self.parts, d.forget, d.retain):
            f[cols], r[cols] = len(fs.users), len(rs.users)
        rows = self._row_columns()
        if d.presence is not None and len(rows):
            f[rows], r[rows] = d.presence.forget_users, d.presence.retain_users
        return f, r

    def specificity(self, draw: int = 0) -> Specificity:
        return self._bootstrap(draw, self.thresholds)

    def decisions(self, draw: int = 0) -> Decisions:
        """BH over every tested node: cached, since `node_view` asks for it once per node."""
        key = ("decisions", draw, self.thresholds)
        if key not in self._cache:
            self._cache[key] = decide(self.specificity(draw), self.thresholds, *self.presence(draw))
        return self._cache[key]

    def label(self, thresholds: GroupThresholds | None = None, draw: int = 0) -> dict[str, Group]:
        thresholds = thresholds or self.thresholds
        key = ("labels", draw, thresholds)
        if key not in self._cache:
            if thresholds.rule is Rule.THRESHOLD:
                f, r = self.mean_scores(draw)
                self._cache[key] = label_modules(self.names, f, r, thresholds, self.families)
            else:
                self._cache[key] = label_by_specificity(self.names, self._bootstrap(draw, thresholds), thresholds,
                                                        *self.presence(draw))
        return self._cache[key]

    @property
    def labels(self) -> dict[str, Group]:
        return self.label()

    def relabel(self, thresholds: GroupThresholds) -> "NodeGroups":
        return NodeGroups(self.names, self.kinds, self.titles, self.families, self.parts, self.draws, thresholds,
                          self._cache)

    def sizes(self) -> dict[str, int]:
        labels = self.labels
        return {g.value: sum(1 for x in labels.values() if x is g) for g in Group}

    def sizes_by_kind(self) -> dict[str, dict[str, int]]:
        labels = self.labels
        out: dict[str, dict[str, int]] = {}
        for name, kind in zip(self.names, self.kinds):
            out.setdefault(kind, {g.value: 0 for g in Group})[labels[name].value] += 1
        return out

    def floor_shares(self) -> dict[str, float]:
        """Per node kind, the importance (share of its family) the floor asks for."""
        sizes = {f: int(np.sum(self.families == f)) for f in np.unique(self.families)}
        return {kind: self.thresholds.floor / sizes[f] for kind, f in zip(self.kinds, self.families)}

    def mean_scores(self, draw: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean score per node on each side (each part over its own prompts)."""
        d = self.draws[draw]
        out = []
        for side in (d.forget, d.retain):
            mean = np.zeros(len(self.names))
            for cols, scores in zip(self.parts, side):
                mean[cols] = scores.mean()
            out.append(torch.as_tensor(mean))
        return out[0], out[1]

    def stability(self) -> GroupStability | None:
        """Per group and kind of draw: mean pairwise Jaccard (None = empty on every draw) and sizes; None with a
        single draw."""
        out = {}
        for kind in (PROMPT_SEED, RETAIN_SAMPLE):
            idx = [0] + [i for i, d in enumerate(self.draws) if i > 0 and d.kind == kind]
            if len(idx) < 2:
                continue
            labelings = [self.label(self.thresholds, i) for i in idx]
            out[kind] = DrawStability(group_stability(labelings), group_sizes(labelings),
                                      [self.draws[i].seed for i in idx])
        if not out:
            return None
        return GroupStability(out, PROMPT_SEED if PROMPT_SEED in out else RETAIN_SAMPLE)

    def top(self, group: Group, n: int = 10) -> list[GroupedNode]:
        """The n nodes of a group with the highest specificity estimate (for forget) or lowest (retain)."""
        spec, labels = self.specificity(), self.labels
        idx = [i for i, name in enumerate(self.names) if labels[name] is group]
        sign = -1.0 if group is Group.RETAIN else 1.0
        idx.sort(key=lambda i: -sign * spec.estimate[i])
        return [self.node_view(i) for i in idx[:n]]

    def basis(self, i: int) -> str | None:
        """For a forget-specific item row: "presence" when no retained user rated the item and no scored
        retain prompt holds it (nothing retained can use it), "use" when retained prompts do hold it and
        the forget side uses it more. (A genre request's retained ratings never hold its films, but
        retained users' histories do: those are "use".)"""
        if self.kinds[i] != Kind.ITEM_ROW.value or self.labels[self.names[i]] is not Group.FORGET:
            return None
        p = self.draws[0].presence
        if p is None:
            return None
        col = int(np.searchsorted(self._row_columns(), i))
        return "presence" if p.retain_population[col] == 0 and p.retain_users[col] == 0 else "use"

    def node_view(self, i: int) -> GroupedNode:
        spec, dec = self.specificity(), self.decisions()
        f_present, r_present = self.presence()
        nan_none = lambda x: None if np.isnan(x) else float(x)  # noqa: E731
        return GroupedNode(
            self.names[i], self.kinds[i], self.titles[i], self.labels[self.names[i]].value,
            NodeSpecificity(float(spec.estimate[i]), float(spec.low[i]), float(spec.high[i]), float(spec.half_width[i]),
                            nan_none(dec.q_forget[i]), nan_none(dec.q_retain[i]), self.basis(i)),
            NodeCounts(int(f_present[i]), int(r_present[i])),
            float(spec.forget_importance[i]), float(spec.retain_importance[i]))

    # --- storage ---------------------------------------------------------------------------
    def save(self, folder: Path) -> dict:
        """Per-user sums to safetensors (non-zero entries only: a user's prompts touch few item rows);
        returns the JSON part (names, parts, draws with presence)."""
        tensors = {}
        for k, d in enumerate(self.draws):
            for side, parts in (("forget", d.forget), ("retain", d.retain)):
                for p, sc in enumerate(parts):
                    at = f"draw{k}.{side}.{p}"
                    u, c = np.nonzero(sc.abs_sums)
                    tensors[f"{at}.users"] = torch.tensor(np.asarray(sc.users, dtype=np.int64))  # copies: draws share sides
                    tensors[f"{at}.counts"] = torch.tensor(sc.counts)
                    tensors[f"{at}.at"] = torch.as_tensor(np.stack([u, c]).astype(np.int64))
                    tensors[f"{at}.abs"] = torch.as_tensor(sc.abs_sums[u, c])
                    tensors[f"{at}.sum"] = torch.as_tensor(sc.sums[u, c])
        save_file(tensors, str(Path(folder) / SCORES))
        return self.layout()

    def layout(self) -> dict:
        """The JSON part of the stored scores: names, parts, draws with their presence."""
        return {"names": self.names, "kinds": self.kinds, "titles": self.titles,
                "families": self.families.tolist(), "parts": [p.tolist() for p in self.parts],
                "draws": [{"kind": d.kind, "seed": d.seed,
                           "presence": None if d.presence is None else d.presence.as_dict()} for d in self.draws]}

    @classmethod
    def load(cls, folder: Path, meta: dict, thresholds: GroupThresholds) -> "NodeGroups":
        path = Path(folder) / SCORES
        parts = [np.asarray(p, dtype=np.int64) for p in meta["parts"]]
        try:
            tensors = {k: v.numpy() for k, v in load_file(str(path)).items()}
            draws = []
            for k, d in enumerate(meta["draws"]):
                sides = {side: [_side(tensors, f"draw{k}.{side}.{p}", len(cols)) for p, cols in enumerate(parts)]
                         for side in ("forget", "retain")}
                presence = None if d["presence"] is None else Presence.from_dict(d["presence"])
                draws.append(Draw(d["kind"], d["seed"], sides["forget"], sides["retain"], presence))
        except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
            raise CacheError(f"{path}: cannot read node scores ({exc})") from exc
        if sum(len(p) for p in parts) != len(meta["names"]):
            raise CacheError(f"{path}: node scores do not match the node list")
        return cls(meta["names"], meta["kinds"], meta["titles"], np.array(meta["families"]), parts, draws, thresholds)


def _side(tensors: dict, at: str, width: int) -> SideScores:
    users, counts = tensors[f"{at}.users"], tensors[f"{at}.counts"]
    u, c = tensors[f"{at}.at"]
    abs_sums, sums = np.zeros((len(users), width)), np.zeros((len(users), width))
    abs_sums[u, c], sums[u, c] = tensors[f"{at}.abs"], tensors[f"{at}.sum"]
    return SideScores(users, counts, abs_sums, sums)
