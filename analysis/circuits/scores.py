"""Per-prompt node scores of a deletion request, and the groups, intervals and stability read off them.

`NodeGroups` holds, for every prompt seed, the (prompts x scored nodes) attribution on
forget and on retain prompts, stored as `scores.safetensors` beside the result's JSON.
Labels, specificity intervals and stability are recomputed from them for any rule
settings, so moving tau or the floor in the app never recomputes attribution. The lean
discovery path (groups only, for unlearning) and the full one (with the faithfulness
curve and exact patching) both produce one of these.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..compute import current
from ..errors import CacheError
from .groups import Group, GroupThresholds, Specificity, group_sizes, group_stability, label_nodes, specificity
from .nodes import Kind, NodeTable

SCORES = "scores.safetensors"


FAMILY = {Kind.ITEM_ROW: 1, Kind.NEURON: 2}  # every other scored kind: 0, the graph nodes


def families_of(table: NodeTable, names: list[str]) -> np.ndarray:
    """0 = graph nodes (roles, heads, MLPs, which make up the computation), 1 = item rows (which make
    up emb:items), 2 = neurons (which make up the MLPs): importance is a share within a family."""
    return np.array([FAMILY.get(table[n].kind, 0) for n in names])


@dataclass
class NodeGroups:
    names: list[str]  # scored nodes, in table order
    kinds: list[str]
    titles: list[str]  # readable labels (item titles for rows)
    families: np.ndarray
    seeds: list[int]
    forget: list[torch.Tensor]  # per seed: (n_forget_prompts, n_nodes)
    retain: list[torch.Tensor]
    thresholds: GroupThresholds = field(default_factory=GroupThresholds)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_table(cls, table: NodeTable, seeds: list[int], forget: list[torch.Tensor], retain: list[torch.Tensor],
                   thresholds: GroupThresholds) -> "NodeGroups":
        names = list(table.scored)
        return cls(names, [table[n].kind.value for n in names], [table[n].label or n for n in names],
                   families_of(table, names), seeds, forget, retain, thresholds)

    # --- reading ---------------------------------------------------------------------------
    def _bootstrap(self, seed_index: int, thresholds: GroupThresholds) -> Specificity:
        """The intervals depend on the resamples and level only: relabelling with another tau, floor or
        rule reuses them."""
        key = ("spec", seed_index, thresholds.resamples, thresholds.level)
        if key not in self._cache:
            self._cache[key] = specificity(self.forget[seed_index], self.retain[seed_index], self.families,
                                           thresholds.resamples, thresholds.level)
        return self._cache[key]

    def specificity(self, seed_index: int = 0) -> Specificity:
        return self._bootstrap(seed_index, self.thresholds)

    def label(self, thresholds: GroupThresholds | None = None, seed_index: int = 0) -> dict[str, Group]:
        thresholds = thresholds or self.thresholds
        key = ("labels", seed_index, thresholds)
        if key not in self._cache:
            self._cache[key] = label_nodes(self.names, self.forget[seed_index], self.retain[seed_index],
                                           self.families, thresholds, self._bootstrap(seed_index, thresholds))[0]
        return self._cache[key]

    @property
    def labels(self) -> dict[str, Group]:
        return self.label()

    def relabel(self, thresholds: GroupThresholds) -> "NodeGroups":
        return NodeGroups(self.names, self.kinds, self.titles, self.families, self.seeds, self.forget, self.retain,
                          thresholds, self._cache)

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

    def mean_scores(self, seed_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forget[seed_index].mean(0), self.retain[seed_index].mean(0)

    def stability(self) -> dict | None:
        """Per group: mean pairwise Jaccard over prompt seeds (None = empty on every seed) and sizes."""
        if len(self.seeds) < 2:
            return None
        labelings = [self.label(self.thresholds, i) for i in range(len(self.seeds))]
        return {"jaccard": group_stability(labelings), "sizes": group_sizes(labelings), "seeds": self.seeds}

    def top(self, group: Group, n: int = 10) -> list[dict]:
        """The n nodes of a group with the highest specificity estimate (for forget) or lowest (retain)."""
        spec, labels = self.specificity(), self.labels
        idx = [i for i, name in enumerate(self.names) if labels[name] is group]
        sign = -1.0 if group is Group.RETAIN else 1.0
        idx.sort(key=lambda i: -sign * spec.estimate[i])
        return [self.node_view(i) for i in idx[:n]]

    def node_view(self, i: int) -> dict:
        spec = self.specificity()
        return {"name": self.names[i], "kind": self.kinds[i], "label": self.titles[i],
                "group": self.labels[self.names[i]].value,
                "specificity": {"estimate": float(spec.estimate[i]), "low": float(spec.low[i]),
                                "high": float(spec.high[i])},
                "forget_importance": float(spec.forget_importance[i]),
                "retain_importance": float(spec.retain_importance[i])}

    # --- storage ---------------------------------------------------------------------------
    def save(self, folder: Path) -> dict:
        """Per-prompt scores to safetensors; returns the JSON part (names, kinds, seeds)."""
        tensors = {}
        for k, seed in enumerate(self.seeds):
            tensors[f"seed{seed}.forget"] = self.forget[k].float().contiguous()
            tensors[f"seed{seed}.retain"] = self.retain[k].float().contiguous()
        save_file(tensors, str(Path(folder) / SCORES))
        return {"names": self.names, "kinds": self.kinds, "titles": self.titles,
                "families": self.families.tolist(), "seeds": self.seeds}

    @classmethod
    def load(cls, folder: Path, meta: dict, thresholds: GroupThresholds) -> "NodeGroups":
        path = Path(folder) / SCORES
        try:
            tensors = load_file(str(path), device=str(current().device))  # where the math runs
            forget = [tensors[f"seed{s}.forget"] for s in meta["seeds"]]
            retain = [tensors[f"seed{s}.retain"] for s in meta["seeds"]]
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise CacheError(f"{path}: cannot read node scores ({exc})") from exc
        if any(t.shape[1] != len(meta["names"]) for t in forget + retain):
            raise CacheError(f"{path}: node scores do not match the node list")
        return cls(meta["names"], meta["kinds"], meta["titles"], np.array(meta["families"]), meta["seeds"],
                   forget, retain, thresholds)
