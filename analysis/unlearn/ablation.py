"""CURE with random groups: the test of whether the *circuit* matters.

The groups CURE found are shuffled among the nodes of each kind (heads, MLPs, roles, item
rows, neurons), so every kind keeps its group sizes and only *which* node is in which group
changes. If CURE with these groups does as well as CURE with its own, the result comes from
the update rules and the group sizes, not from the circuit.
"""
from __future__ import annotations

import numpy as np

from ..circuits.groups import Group
from ..circuits.nodes import NodeTable


def random_groups(groups: dict[str, Group], table: NodeTable, seed: int) -> dict[str, Group]:
    """`groups` with labels permuted (seeded) within each node kind; sizes per kind unchanged."""
    kind = {n.name: n.kind.value for n in table.nodes}
    rng = np.random.default_rng(seed)
    out: dict[str, Group] = {}
    for k in sorted({kind.get(name, "other") for name in groups}):
        names = sorted(name for name in groups if kind.get(name, "other") == k)
        labels = [groups[name] for name in names]
        out.update(zip(names, (labels[i] for i in rng.permutation(len(labels)))))
    return out
