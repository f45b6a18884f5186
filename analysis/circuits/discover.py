"""Circuits for a deletion request: attribution on forget and retain prompts, the task circuit,
its faithfulness, agreement with exact patching, node groups with intervals and their stability.

Cached under cache/circuits/<key> (key = model + data + deletion request + settings):
`circuit.json` and the per-prompt node scores `scores.safetensors`. The group rule is not
part of the key: relabelling reads the stored scores. `discover_groups` is the lean path
for unlearning (attribution on one prompt seed, cached under cache/groups/<key>): it
reuses a full result when one is cached.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from ..cache import artefact_dir, build_or_load, config_key, read_json, write_json_atomic
from ..data.forget import ForgetSet, ForgetSpec, parse_forget_spec
from ..errors import SettingsError, parse_choice
from ..model.recommender import Recommender
from ..progress import ProgressFn, or_silent
from ..workspace import Workspace
from .view import CircuitView, GroupStability
from .attribution import Attribution, AttributionMethod, parse_attribution_method, patch_embedding_nodes, patch_nodes
from .corrupt import Corruption
from .coverage import Coverage, coverage_view
from .engine import Discovery
from .faithfulness import CurvePoint, circuit_points, faithfulness_curve, smallest_circuit, top_edges
from .graph import CircuitGraph
from .describe import describe
from .groups import Group, GroupThresholds, Rule
from .nodes import NodeTable
from .ownership import recommender_table
from .scores import NodeGroups

RESULT = "circuit.json"
PATCHED_ROWS = 100  # item rows checked against exact patching per side (seeded sample of the rows present)
TARGETS = ("auto", "replace", "keep")


@dataclass(frozen=True)
class CircuitSettings:
    method: AttributionMethod = AttributionMethod.EAP_IG
    n_prompts: int = 256  # per side: forget prompts and retain prompts
    corruption: Corruption = Corruption.PPR
    ig_steps: int = 8
    batch_size: int = 64
    seed: int = 0  # prompt sampling and corruption; stability adds seed+1, seed+2, ...
    stability_seeds: int = 3
    target: float = 0.8  # the returned circuit is the smallest top-n one reaching this...
    criterion: str = "recovery"  # ...on this curve field ("recovery" or "faithfulness")
    top_n: int | None = None  # or a fixed number of edges instead of a target
    granularity: str = "modules"  # or "neurons": every MLP hidden unit is a node too
    # roles and item rows are scored on the whole request (every forget sample, as many retain ones) at
    # the input, with this many IG steps (1: the midpoint gradient; EAP when the method is EAP): 8 steps
    # would take ~200 s on users:0.1 on 2 cores, one ~26 s (see request.py). Against exact patching of
    # 100 sampled rows (Spearman, genre:Horror's forget side, the hardest measured): EAP 0.88, 1 step
    # 0.896, 2 steps 0.926, 4 0.924, 8 0.925; users:0.1 0.957 / 0.949 at 1 step. One step is the default
    # for speed (a lean discovery feeds every CURE run); `--input-steps 2` buys the last 0.03
    input_steps: int = 1
    input_batch: int = 128  # 1.8 s per 1,024 prompts at 128, 2.4 s at 512 (default model, 2 cores)
    targets: str = "auto"  # replace the target item in the counterfactual too: "auto" (genre requests), "replace", "keep"
    retain_samples: int = 3  # stability over retain samples: draw 0 and this many - 1 others
    null: bool = False  # forget prompts drawn from the retained population: what the rule finds by chance
    # at scale (issue 26). The role and item-row scores on at most this many seeded prompts per side instead of the
    # whole request: on a GPT-2-Large-shaped model cut to 2 layers, the whole request of users:0.1 (~11,500 title
    # prompts) had not finished its one IG step after 17 min on 2 cores. None: the whole request
    request_samples: int | None = None
    # exact patching checks this many seeded heads and MLPs (and at most as many item rows) per side, not every
    # one: one forward pass per node and batch. None: every node (the agreement is then over all of them)
    patch_check: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse_attribution_method(self.method))
        object.__setattr__(self, "corruption", parse_choice(Corruption, self.corruption, "corruption"))
        if min(self.n_prompts, self.stability_seeds, self.batch_size, self.ig_steps, self.input_steps, self.input_batch,
               self.retain_samples, *(v for v in (self.request_samples, self.patch_check) if v is not None)) < 1:
            raise SettingsError("n_prompts, stability_seeds, retain_samples, request_samples, patch_check, batch sizes "
                                "and IG steps must be at least 1")
        if self.targets not in TARGETS:
            raise SettingsError(f"targets must be one of {', '.join(TARGETS)}, not {self.targets!r}")
        if self.top_n is not None and self.top_n < 0:
            raise SettingsError("top_n must be >= 0")
        if self.granularity not in ("modules", "neurons"):
            raise SettingsError(f"granularity must be modules or neurons, not {self.granularity!r}")
        if self.granularity == "neurons" and self.method is AttributionMethod.PATCHING:
            raise SettingsError("neuron nodes are scored by EAP or EAP-IG; exact patching covers modules only")
        if self.criterion not in ("recovery", "faithfulness"):
            raise SettingsError(f"criterion must be recovery or faithfulness, not {self.criterion!r}")

    def replaces_target(self, spec: ForgetSpec) -> bool:
        """Genre requests score their targets by default: the genre's films are what every forget prompt
        asks about, and a kept target scores exactly 0."""
        if self.targets == "auto":
            return spec.level == "genre" and self.corruption not in (Corruption.SHUFFLE, Corruption.MEAN)
        return self.targets == "replace"

    @classmethod
    def from_env(cls) -> "CircuitSettings":
        """The app's settings: the defaults, or CURE_N_PROMPTS, CURE_STABILITY_SEEDS and CURE_RETAIN_SAMPLES
        where set. `cure warm` reads the same, so what it prepares is what the app then asks for."""
        return cls(n_prompts=int(os.environ.get("CURE_N_PROMPTS") or cls.n_prompts),
                   stability_seeds=int(os.environ.get("CURE_STABILITY_SEEDS") or cls.stability_seeds),
                   retain_samples=int(os.environ.get("CURE_RETAIN_SAMPLES") or cls.retain_samples))

    def key(self) -> dict:
        d = asdict(self)
        d["method"], d["corruption"] = self.method.value, self.corruption.value
        for name in ("request_samples", "patch_check"):  # only when set: discoveries stored before them keep their keys
            if d[name] is None:
                d.pop(name)
        return d


def model_identity(rec: Recommender) -> str:
    """What the cache key says about the model: its manifest (content hashes) or its path."""
    manifest = rec.path / "manifest.json" if rec.path else None
    if manifest is not None and manifest.is_file():
        return config_key(json.loads(manifest.read_text()))
    return str(rec.path)


def _table(rec: Recommender, ws: Workspace | None, settings: CircuitSettings) -> NodeTable:
    titles = dict(zip(ws.data.items["item_id"], ws.data.items["title"])) if ws is not None else None
    return recommender_table(rec, titles, neurons=settings.granularity == "neurons")


def _spearman(a, b) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


@dataclass
class CircuitResult:
    settings: CircuitSettings
    thresholds: GroupThresholds
    forget_summary: dict
    n_layers: int
    n_heads: int
    forget: dict  # attribution on forget prompts: edges, nodes (upstream), clean/corrupt metric, n_prompts
    retain: dict
    patched: dict  # exact patching, {"forget": {node: effect}, "retain": {...}}: input, modules, roles, sampled rows
    curve: list[CurvePoint]
    at_circuit: CurvePoint
    node_groups: NodeGroups
    coverage: dict  # {"blocks": [||g_forget||^2 per block], "total": ...}
    seconds: dict
    path: Path | None = None
    table: NodeTable | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.node_groups.thresholds != self.thresholds:
            self.node_groups = self.node_groups.relabel(self.thresholds)

    @property
    def labels(self) -> dict[str, Group]:
        return self.node_groups.labels

    @property
    def graph(self) -> CircuitGraph:
        """The task graph: scores on all prompts (forget and retain), the chosen circuit marked."""
        g = CircuitGraph.from_shape(self.n_layers, self.n_heads)
        g.scores = self.combined_edges()
        g.in_circuit = top_edges(g, g.scores, self.at_circuit.n_edges)
        return g

    @property
    def modules(self) -> list[str]:
        """Every scored node (roles, heads, MLPs, item rows): what selective unlearning can name."""
        return list(self.node_groups.names)

    def combined_edges(self) -> torch.Tensor:
        nf, nr = self.forget["n_prompts"], self.retain["n_prompts"]
        return (nf * torch.tensor(self.forget["edges"]) + nr * torch.tensor(self.retain["edges"])) / (nf + nr)

    def label(self, thresholds: GroupThresholds, seed_index: int = 0) -> dict[str, Group]:
        return self.node_groups.label(thresholds, seed_index)

    def relabel(self, thresholds: GroupThresholds) -> "CircuitResult":
        return replace(self, thresholds=thresholds, node_groups=self.node_groups.relabel(thresholds))

    def stability(self) -> GroupStability | None:
        return self.node_groups.stability()

    def agreement(self) -> dict:
        """Spearman of attribution vs exact patching: heads and MLPs, embedding roles, sampled item rows."""
        out: dict = {}
        up = CircuitGraph.from_shape(self.n_layers, self.n_heads).upstream
        ng = self.node_groups
        # the heads and MLPs exact patching checked (every one, unless settings.patch_check sampled them)
        checked = [i for i, n in enumerate(up) if i > 0 and n in self.patched["forget"] and n in self.patched["retain"]]
        for side in ("forget", "retain"):
            ours = getattr(self, side)["nodes"]
            out[side] = _spearman([ours[i] for i in checked], [self.patched[side][up[i]] for i in checked])
        nf, nr = self.forget["n_prompts"], self.retain["n_prompts"]
        mix = lambda a, b: (nf * np.array(a) + nr * np.array(b)) / (nf + nr)  # noqa: E731
        out["all"] = _spearman(mix([self.forget["nodes"][i] for i in checked], [self.retain["nodes"][i] for i in checked]),
                               mix([self.patched["forget"][up[i]] for i in checked],
                                   [self.patched["retain"][up[i]] for i in checked]))
        out["n_graph_nodes"] = len(checked)
        for kind, key in (("embedding", "roles"), ("item-row", "item_rows")):
            a, b = [], []
            for side in ("forget", "retain"):
                sampled = getattr(self, side)["sampled_inputs"]
                names = [n for n, k in zip(ng.names, ng.kinds) if k == kind and n in self.patched[side]]
                a += [sampled[n] for n in names]
                b += [self.patched[side][n] for n in names]
                out[f"{key}_{side}"] = _spearman([sampled[n] for n in names], [self.patched[side][n] for n in names])
            out[key] = _spearman(a, b)
            out[f"n_{key}"] = len(a)
        return out

    def coverage_view(self) -> Coverage:
        table = self.table
        if table is None or not self.coverage.get("blocks"):
            return Coverage(None)
        return coverage_view(table, self.coverage["blocks"], self.coverage["total"], self.labels)

    def view(self) -> CircuitView:
        """The typed view the app and the tour read (its layout is to_json's: one writer, one reader)."""
        return CircuitView.from_json(self.to_json())

    def to_json(self) -> dict:
        """The CLI/app view plus everything needed to rebuild the result (`from_json`)."""
        g = self.graph
        up = g.upstream
        ng = self.node_groups
        agreement, stability = self.agreement(), self.stability()
        f_mean, r_mean = ng.mean_scores()
        input_node = {"name": "input", "kind": "input", "label": "input", "group": None, "specificity": None,
                      "forget_score": self.forget["nodes"][0], "retain_score": self.retain["nodes"][0],
                      "forget_patching": self.patched["forget"].get("input"),
                      "retain_patching": self.patched["retain"].get("input")}
        nodes = [input_node] + [{**ng.node_view(i).to_json(), "forget_score": float(f_mean[i]), "retain_score": float(r_mean[i]),
                                 "forget_patching": self.patched["forget"].get(n),
                                 "retain_patching": self.patched["retain"].get(n)} for i, n in enumerate(ng.names)]
        return {
            "method": self.settings.method.value,
            "forget": self.forget_summary,
            "settings": self.settings.key(),
            "thresholds": self.thresholds.as_dict(),
            "floor_share": ng.floor_shares(),
            "shape": {"n_layers": self.n_layers, "n_heads": self.n_heads, "n_edges": g.n_edges},
            "metric": {side: {"clean": getattr(self, side)["clean_metric"], "corrupt": getattr(self, side)["corrupt_metric"],
                              "n_prompts": getattr(self, side)["n_prompts"]} for side in ("forget", "retain")},
            "nodes": nodes,
            "groups": ng.sizes(),
            "groups_by_kind": ng.sizes_by_kind(),
            "top_forget_specific": [v.to_json() for v in ng.top(Group.FORGET)],
            "summary": [g.as_dict() for g in describe(ng)],
            "tested": ng.decisions().tested if self.thresholds.rule is Rule.SPECIFICITY else None,
            "targets_scored": self.settings.replaces_target(parse_forget_spec(self.forget_summary["spec"])),
            "edges": [{"from": up[i], "to": g.downstream[j], "forget_score": self.forget["edges"][i][j],
                       "retain_score": self.retain["edges"][i][j], "score": float(g.scores[i, j]),
                       "in_circuit": bool(g.in_circuit[i, j])} for i, j in torch.nonzero(g.allowed).tolist()],
            "faithfulness": {"curve": [p.as_dict() for p in self.curve],
                             "at_circuit": {**self.at_circuit.as_dict(), "edges": self.at_circuit.n_edges}},
            "agreement": {"spearman_vs_patching": agreement["all"], "by_side": agreement,
                          "over": "heads and MLPs (the input node is the whole corrupted run); roles and a "
                                  f"sample of up to {PATCHED_ROWS} item rows per side under by_side"},
            "stability": {**(stability.to_json() if stability else {"jaccard": None, "sizes": None}), "seeds": ng.seeds},
            "coverage": {**self.coverage_view().to_json(), **self.coverage},
            "draws": [{"kind": dr.kind, "seed": dr.seed, "forget": f.tolist(), "retain": r.tolist()}
                      for dr, (f, r) in zip(ng.draws, (ng.mean_scores(k) for k in range(len(ng.draws))))],
            "node_scores": {"file": "scores.safetensors", **ng.layout()},
            "attribution": {"forget": self.forget, "retain": self.retain, "patched": self.patched},
            "seconds": self.seconds,
            "path": str(self.path) if self.path else None,
        }

    @classmethod
    def from_json(cls, d: dict, path: Path, table: NodeTable | None = None) -> "CircuitResult":
        thresholds = GroupThresholds(**d["thresholds"])
        at = d["faithfulness"]["at_circuit"]
        groups = NodeGroups.load(path, d["node_scores"], thresholds)
        coverage = {k: d["coverage"][k] for k in ("blocks", "total") if k in d["coverage"]}
        return cls(CircuitSettings(**d["settings"]), thresholds, d["forget"], d["shape"]["n_layers"],
                   d["shape"]["n_heads"], d["attribution"]["forget"], d["attribution"]["retain"],
                   d["attribution"]["patched"], [CurvePoint(**p) for p in d["faithfulness"]["curve"]],
                   CurvePoint(at["n_edges"], at["share"], at["faithfulness"], at["recovery"]), groups, coverage,
                   d["seconds"], path, table)


def _attribution_dict(a: Attribution, sampled_inputs: dict[str, float]) -> dict:
    """The sample's graph attribution, and the input scores (as the groups compute them) of the roles and
    item rows that exact patching checked on the same sample."""
    return {"edges": a.edges.tolist(), "nodes": a.nodes.tolist(), "clean_metric": a.clean_metric,
            "corrupt_metric": a.corrupt_metric, "n_prompts": a.n_prompts, "seconds": a.seconds,
            "sampled_inputs": sampled_inputs}


def compute_circuits(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings,
                     thresholds: GroupThresholds = GroupThresholds(), progress: ProgressFn | None = None) -> CircuitResult:
    """Everything in CircuitResult, computed now (see `discover_circuits` for the cached entry point)."""
    progress = or_silent(progress)
    t0 = time.perf_counter()
    d = Discovery(ws, rec, forget, settings, _table(rec, ws, settings), progress)
    runner, table = d.runner, d.table
    seconds: dict[str, float] = {"setup": time.perf_counter() - t0}

    tick = time.perf_counter()
    works = d.draws(None, settings.stability_seeds, settings.retain_samples)  # every draw first: progress only moves on
    first = works[0]
    f_set, r_set, f_attr, r_attr = first.forget_sample, first.retain_sample, first.forget_attr, first.retain_attr
    seconds["attribution"] = time.perf_counter() - tick

    tick = time.perf_counter()
    patched, sampled = {}, {}
    rng = np.random.default_rng(settings.seed)
    n_roles = len(table.roles)
    up = runner.graph.upstream
    checked = list(range(len(up)))  # the input node and every head and MLP, or (patch_check) a seeded sample of them
    if settings.patch_check is not None and settings.method is not AttributionMethod.PATCHING:
        checked = [0] + sorted(rng.choice(np.arange(1, len(up)), size=min(settings.patch_check, len(up) - 1),
                                          replace=False).tolist())
    n_rows_checked = PATCHED_ROWS if settings.patch_check is None else min(PATCHED_ROWS, settings.patch_check)
    for side, ps, attr in (("forget", f_set, f_attr), ("retain", r_set, r_attr)):
        up_effects = attr.nodes if settings.method is AttributionMethod.PATCHING else \
            patch_nodes(runner, ps, settings.batch_size, progress, checked)
        values = dict(zip([up[i] for i in checked], up_effects.tolist()))
        # the input scores the groups use, on the sample exact patching can afford
        inputs = d.input_side_scores(ps, attr)
        row_scores = inputs[:, n_roles:].abs().sum(0)
        present = [n for n, v in zip(table.item_rows, row_scores) if v > 0]
        rows = sorted(rng.choice(present, size=min(n_rows_checked, len(present)), replace=False).tolist()) if present else []
        names = table.roles + rows
        exact = patch_embedding_nodes(runner, ps, names, settings.batch_size, progress).mean(1)
        values.update(zip(names, exact.tolist()))
        patched[side] = values
        columns = {n: c for c, n in enumerate(table.roles + table.item_rows)}
        means = inputs.cpu().double().mean(0)
        sampled[side] = {n: float(means[columns[n]]) for n in names}
    seconds["node_patching"] = time.perf_counter() - tick

    tick = time.perf_counter()
    both = f_set.concat(r_set)
    n_f, n_r = len(f_set), len(r_set)
    combined = (n_f * f_attr.edges + n_r * r_attr.edges) / (n_f + n_r)
    curve = faithfulness_curve(runner, both, combined, batch_size=settings.batch_size, progress=progress)
    if settings.top_n is not None:
        at = circuit_points(runner, both, combined, [settings.top_n], settings.batch_size, progress)[0]
    else:
        at = smallest_circuit(runner, both, combined, curve, settings.target, settings.criterion,
                              settings.batch_size, progress)
    seconds["faithfulness"] = time.perf_counter() - tick

    tick = time.perf_counter()
    coverage = d.coverage(f_set)
    seconds["coverage"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - t0
    groups = d.groups(works, thresholds)
    return CircuitResult(settings, thresholds, asdict(forget.summary()), runner.n_layers, runner.n_heads,
                         _attribution_dict(f_attr, sampled["forget"]), _attribution_dict(r_attr, sampled["retain"]),
                         patched, curve, at, groups, coverage, seconds, table=table)


FORMAT = 3  # 3: whole-request input scores, per-user sums with presence, draws (2: per-prompt scores of one sample)


def circuits_key(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings) -> str:
    return config_key({**ws.key_core(model_identity(rec), forget), "format": FORMAT, "settings": settings.key()})


def _store(tmp: Path, result: CircuitResult) -> None:
    result.node_groups.save(tmp)
    write_json_atomic(tmp / RESULT, result.to_json())


def discover_circuits(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings | None = None,
                      thresholds: GroupThresholds | None = None, progress: ProgressFn | None = None) -> CircuitResult:
    """Cached circuits for a deletion request; the group rule relabels the cached scores for free."""
    settings = settings or CircuitSettings()
    thresholds = thresholds or GroupThresholds()

    def build(tmp: Path) -> None:
        _store(tmp, compute_circuits(ws, rec, forget, settings, thresholds, progress))

    path = build_or_load(ws.root, "circuits", circuits_key(ws, rec, forget, settings), build,
                         on_wait=lambda msg: or_silent(progress)(msg, 0, 1))
    result = CircuitResult.from_json(read_json(path / RESULT), path, _table(rec, ws, settings))
    return result if result.thresholds == thresholds else result.relabel(thresholds)


def cached_circuits(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings | None = None,
                    thresholds: GroupThresholds | None = None) -> CircuitResult | None:
    """The full result when it is already cached (never computes): for views that only describe it."""
    settings = settings or CircuitSettings()
    if not artefact_dir(ws.root, "circuits", circuits_key(ws, rec, forget, settings)).exists():
        return None
    return discover_circuits(ws, rec, forget, settings, thresholds)
