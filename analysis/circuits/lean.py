"""The lean discovery path for unlearning: node scores on one prompt seed and their groups.

CURE and selective unlearning need groups, not the faithfulness curve, exact patching or
stability draws. `discover_groups` reads a cached full result when there is one (same
settings), else computes one draw (the whole request's input scores, the module sample's
attribution) plus the bootstrap and the forget-gradient coverage, cached under
cache/groups/<key>.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..cache import artefact_dir, build_or_load, read_json, write_json_atomic
from ..data.forget import ForgetSet
from ..model.recommender import Recommender
from ..progress import ProgressFn, or_silent
from ..workspace import Workspace
from .coverage import Coverage, coverage_view
from .discover import CircuitSettings, _table, circuits_key, discover_circuits
from .engine import Discovery
from .groups import Group, GroupThresholds
from .nodes import NodeTable
from .scores import NodeGroups

GROUPS = "groups.json"


@dataclass
class GroupsResult:
    """The lean discovery: node scores on one prompt seed, groups, coverage (no curve, no patching)."""

    node_groups: NodeGroups
    coverage: dict
    seconds: dict
    path: Path | None
    table: NodeTable | None = None
    from_full: bool = False  # read off a cached full circuit result

    @property
    def labels(self) -> dict[str, Group]:
        return self.node_groups.labels

    def coverage_view(self) -> Coverage:
        return coverage_view(self.table, self.coverage["blocks"], self.coverage["total"], self.labels)


def discover_groups(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings | None = None,
                    thresholds: GroupThresholds | None = None, progress: ProgressFn | None = None) -> GroupsResult:
    """Node groups for unlearning: a cached full result when there is one, else attribution + bootstrap only."""
    settings = settings or CircuitSettings()
    thresholds = thresholds or GroupThresholds()
    table = _table(rec, ws, settings)
    full = artefact_dir(ws.root, "circuits", circuits_key(ws, rec, forget, settings))
    if full.exists():
        r = discover_circuits(ws, rec, forget, settings, thresholds, progress)
        return GroupsResult(r.node_groups, r.coverage, r.seconds, r.path, table, True)
    lean = replace(settings, stability_seeds=1, retain_samples=1)

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        d = Discovery(ws, rec, forget, lean, table, or_silent(progress))
        works = d.draws()
        coverage = d.coverage(works[0].forget_sample)
        groups = d.groups(works, thresholds)
        meta = groups.save(tmp)
        write_json_atomic(tmp / GROUPS, {"node_scores": meta, "coverage": coverage, "settings": lean.key(),
                                         "seconds": {"total": time.perf_counter() - t0}})

    path = build_or_load(ws.root, "groups", circuits_key(ws, rec, forget, lean), build,
                         on_wait=lambda msg: or_silent(progress)(msg, 0, 1))
    d = read_json(path / GROUPS)
    groups = NodeGroups.load(path, d["node_scores"], thresholds)
    return GroupsResult(groups, d["coverage"], d["seconds"], path, table)
