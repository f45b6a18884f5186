"""Circuits for a deletion request: attribution on forget and retain prompts, the task circuit,
its faithfulness, agreement with exact patching, module groups and their stability.

Cached under cache/circuits/<key>, key = model + data + deletion request + settings. The
group thresholds are not part of the key: every node score needed to relabel (including
the other seeds' scores for stability) is stored, so moving a threshold costs nothing.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from ..cache import build_or_load, config_key, read_json, write_json_atomic
from ..config import CODE_VERSION
from ..data.forget import ForgetSet
from ..data.samples import TRAIN
from ..errors import ForgetSpecError, SettingsError, parse_choice
from ..model.recommender import Recommender
from ..model.sequences import PromptBuilder
from ..progress import ProgressFn, or_silent
from ..workspace import Workspace
from .attribution import Attribution, AttributionConfig, Method, parse_method, attribute, patch_nodes
from .corrupt import Corruption, PromptSet, build_prompt_set, user_item_graph
from .faithfulness import CurvePoint, circuit_points, faithfulness_curve, smallest_circuit, top_edges
from .graph import CircuitGraph
from .groups import Group, GroupThresholds, group_stability, label_modules
from .runner import GraphRunner
from .trace import load_bridge

RESULT = "circuit.json"


@dataclass(frozen=True)
class CircuitSettings:
    method: Method = Method.EAP_IG
    n_prompts: int = 256  # per side: forget prompts and retain prompts
    corruption: Corruption = Corruption.PPR
    ig_steps: int = 8
    batch_size: int = 64
    seed: int = 0  # prompt sampling and corruption; stability adds seed+1, seed+2, ...
    stability_seeds: int = 3
    target: float = 0.8  # the returned circuit is the smallest top-n one reaching this...
    criterion: str = "recovery"  # ...on this curve field ("recovery" or "faithfulness")
    top_n: int | None = None  # or a fixed number of edges instead of a target

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse_method(self.method))
        object.__setattr__(self, "corruption", parse_choice(Corruption, self.corruption, "corruption"))
        if self.n_prompts < 1 or self.stability_seeds < 1 or self.batch_size < 1 or self.ig_steps < 1:
            raise SettingsError("n_prompts, stability_seeds, batch_size and ig_steps must be at least 1")
        if self.top_n is not None and self.top_n < 0:
            raise SettingsError("top_n must be >= 0")
        if self.criterion not in ("recovery", "faithfulness"):
            raise SettingsError(f"criterion must be recovery or faithfulness, not {self.criterion!r}")

    def key(self) -> dict:
        d = asdict(self)
        d["method"], d["corruption"] = self.method.value, self.corruption.value
        return d


def model_identity(rec: Recommender) -> str:
    """What the cache key says about the model: its manifest (content hashes) or its path."""
    manifest = rec.path / "manifest.json" if rec.path else None
    if manifest is not None and manifest.is_file():
        return config_key(json.loads(manifest.read_text()))
    return str(rec.path)


def sample_rows(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(rows) == 0:
        raise ForgetSpecError("no samples to trace: the prompt set is empty")
    return rows.sample(n=min(n, len(rows)), random_state=seed).sort_values(["user_id", "pos"])


def retain_samples(ws: Workspace, forget: ForgetSet) -> pd.DataFrame:
    frame = ws.interactions.frame
    return frame[(frame["split"] == TRAIN).to_numpy() & ~forget.mask]


@dataclass
class CircuitResult:
    settings: CircuitSettings
    thresholds: GroupThresholds
    forget_summary: dict
    n_layers: int
    n_heads: int
    forget: dict  # attribution on forget prompts: edges, nodes, clean/corrupt metric, n_prompts
    retain: dict
    patched_nodes: dict  # exact node patching on the same prompts: {"forget": [...], "retain": [...]}
    curve: list[CurvePoint]
    at_circuit: CurvePoint
    seed_nodes: list[dict]  # per stability seed: {"seed", "forget": [...], "retain": [...]}
    seconds: dict
    labels: dict[str, Group] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        if not self.labels:
            self.labels = self.label(self.thresholds)

    @property
    def graph(self) -> CircuitGraph:
        """The task graph: scores on all prompts (forget and retain), the chosen circuit marked."""
        g = CircuitGraph.from_shape(self.n_layers, self.n_heads)
        g.scores = self.combined_edges()
        g.in_circuit = top_edges(g, g.scores, self.at_circuit.n_edges)
        return g

    @property
    def modules(self) -> list[str]:
        return CircuitGraph.from_shape(self.n_layers, self.n_heads).upstream[1:]

    def combined_edges(self) -> torch.Tensor:
        nf, nr = self.forget["n_prompts"], self.retain["n_prompts"]
        return (nf * torch.tensor(self.forget["edges"]) + nr * torch.tensor(self.retain["edges"])) / (nf + nr)

    def label(self, thresholds: GroupThresholds, seed_index: int = 0) -> dict[str, Group]:
        s = self.seed_nodes[seed_index]
        return label_modules(self.modules, torch.tensor(s["forget"][1:]), torch.tensor(s["retain"][1:]), thresholds)

    def relabel(self, thresholds: GroupThresholds) -> "CircuitResult":
        return replace(self, thresholds=thresholds, labels=self.label(thresholds))

    def stability(self) -> dict[str, float] | None:
        if len(self.seed_nodes) < 2:
            return None
        return group_stability([self.label(self.thresholds, i) for i in range(len(self.seed_nodes))])

    def agreement(self) -> dict:
        out = {}
        for side in ("forget", "retain"):
            ours = np.array(getattr(self, side)["nodes"][1:])
            exact = np.array(self.patched_nodes[side][1:])
            out[side] = float(spearmanr(ours, exact).statistic)
        nf, nr = self.forget["n_prompts"], self.retain["n_prompts"]
        mix = lambda a, b: (nf * np.array(a[1:]) + nr * np.array(b[1:])) / (nf + nr)  # noqa: E731
        out["all"] = float(spearmanr(mix(self.forget["nodes"], self.retain["nodes"]),
                                     mix(self.patched_nodes["forget"], self.patched_nodes["retain"])).statistic)
        return out

    def to_json(self) -> dict:
        """The CLI/app view plus everything needed to rebuild the result (`from_json`)."""
        g = self.graph
        names = g.upstream
        agreement = self.agreement()
        stability = self.stability()
        return {
            "method": self.settings.method.value,
            "forget": self.forget_summary,
            "settings": self.settings.key(),
            "thresholds": asdict(self.thresholds),
            "shape": {"n_layers": self.n_layers, "n_heads": self.n_heads, "n_edges": g.n_edges},
            "metric": {side: {"clean": getattr(self, side)["clean_metric"], "corrupt": getattr(self, side)["corrupt_metric"],
                              "n_prompts": getattr(self, side)["n_prompts"]} for side in ("forget", "retain")},
            "nodes": [{"name": n, "forget_score": self.forget["nodes"][i], "retain_score": self.retain["nodes"][i],
                       "forget_patching": self.patched_nodes["forget"][i], "retain_patching": self.patched_nodes["retain"][i],
                       "group": self.labels[n].value if n in self.labels else None} for i, n in enumerate(names)],
            "edges": [{"from": names[i], "to": g.downstream[j], "forget_score": self.forget["edges"][i][j],
                       "retain_score": self.retain["edges"][i][j], "score": float(g.scores[i, j]),
                       "in_circuit": bool(g.in_circuit[i, j])} for i, j in torch.nonzero(g.allowed).tolist()],
            "faithfulness": {"curve": [p.as_dict() for p in self.curve],
                             "at_circuit": {**self.at_circuit.as_dict(), "edges": self.at_circuit.n_edges}},
            "agreement": {"spearman_vs_patching": agreement["all"], "by_side": agreement,
                          "over": "heads and MLPs (the input node is the whole corrupted run)"},
            "stability": {"jaccard": stability, "seeds": [s["seed"] for s in self.seed_nodes]},
            "seeds": self.seed_nodes,
            "attribution": {"forget": self.forget, "retain": self.retain, "patched_nodes": self.patched_nodes},
            "seconds": self.seconds,
            "path": str(self.path) if self.path else None,
        }

    @classmethod
    def from_json(cls, d: dict, path: Path | None = None) -> "CircuitResult":
        labels = {n["name"]: Group(n["group"]) for n in d["nodes"] if n["group"]}
        at = d["faithfulness"]["at_circuit"]
        return cls(CircuitSettings(**d["settings"]), GroupThresholds(**d["thresholds"]), d["forget"],
                   d["shape"]["n_layers"], d["shape"]["n_heads"], d["attribution"]["forget"], d["attribution"]["retain"],
                   d["attribution"]["patched_nodes"], [CurvePoint(**p) for p in d["faithfulness"]["curve"]],
                   CurvePoint(at["n_edges"], at["share"], at["faithfulness"], at["recovery"]), d["seeds"],
                   d["seconds"], labels, path)


def _attribution_dict(a: Attribution) -> dict:
    return {"edges": a.edges.tolist(), "nodes": a.nodes.tolist(), "clean_metric": a.clean_metric,
            "corrupt_metric": a.corrupt_metric, "n_prompts": a.n_prompts, "seconds": a.seconds}


def _prompt_sets(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings, seed: int,
                 builder: PromptBuilder, graph) -> tuple[PromptSet, PromptSet]:
    f_rows = sample_rows(forget.forget_samples, settings.n_prompts, seed)
    r_rows = sample_rows(retain_samples(ws, forget), settings.n_prompts, seed)
    make = lambda rows, s: build_prompt_set(builder, rows, settings.corruption, graph, seed=s)  # noqa: E731
    return make(f_rows, seed), make(r_rows, seed + 10_000)


def compute_circuits(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings,
                     thresholds: GroupThresholds = GroupThresholds(), progress: ProgressFn | None = None) -> CircuitResult:
    """Everything in CircuitResult, computed now (see `discover_circuits` for the cached entry point)."""
    progress = or_silent(progress)
    t0 = time.perf_counter()
    runner = GraphRunner(load_bridge(rec), rec)
    builder = PromptBuilder(rec.fmt, ws.interactions)
    graph = user_item_graph(ws.interactions) if settings.corruption is Corruption.PPR else None
    cfg = AttributionConfig(settings.method, settings.ig_steps, settings.batch_size)
    seconds: dict[str, float] = {}

    tick = time.perf_counter()
    f_set, r_set = _prompt_sets(ws, rec, forget, settings, settings.seed, builder, graph)
    seconds["prompts"] = time.perf_counter() - tick
    f_attr = attribute(runner, f_set, cfg, progress)
    r_attr = attribute(runner, r_set, cfg, progress)
    seconds["attribution"] = f_attr.seconds + r_attr.seconds

    tick = time.perf_counter()
    if settings.method is Method.PATCHING:
        patched = {"forget": f_attr.nodes.tolist(), "retain": r_attr.nodes.tolist()}
    else:
        patched = {"forget": patch_nodes(runner, f_set, settings.batch_size, progress).tolist(),
                   "retain": patch_nodes(runner, r_set, settings.batch_size, progress).tolist()}
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
    seed_nodes = [{"seed": settings.seed, "forget": f_attr.nodes.tolist(), "retain": r_attr.nodes.tolist()}]
    for seed in range(settings.seed + 1, settings.seed + settings.stability_seeds):
        fs, rs = _prompt_sets(ws, rec, forget, settings, seed, builder, graph)
        if settings.method is Method.PATCHING:  # groups only need node scores
            nodes = [patch_nodes(runner, s, settings.batch_size, progress) for s in (fs, rs)]
        else:
            nodes = [attribute(runner, s, cfg, progress).nodes for s in (fs, rs)]
        seed_nodes.append({"seed": seed, "forget": nodes[0].tolist(), "retain": nodes[1].tolist()})
    seconds["stability"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - t0

    return CircuitResult(settings, thresholds, forget.summary(), runner.n_layers, runner.n_heads,
                         _attribution_dict(f_attr), _attribution_dict(r_attr), patched, curve, at, seed_nodes,
                         seconds)


def circuits_key(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings) -> str:
    return config_key({"code": CODE_VERSION, "data": ws.fingerprint, "history": ws.config.history,
                       "model": model_identity(rec), "forget": forget.key, "settings": settings.key()})


def discover_circuits(ws: Workspace, rec: Recommender, forget: ForgetSet, settings: CircuitSettings | None = None,
                      thresholds: GroupThresholds | None = None, progress: ProgressFn | None = None) -> CircuitResult:
    """Cached circuits for a deletion request; thresholds relabel the cached scores for free."""
    settings = settings or CircuitSettings()
    thresholds = thresholds or GroupThresholds()

    def build(tmp: Path) -> None:
        result = compute_circuits(ws, rec, forget, settings, thresholds, progress)
        write_json_atomic(tmp / RESULT, result.to_json())

    path = build_or_load(ws.root, "circuits", circuits_key(ws, rec, forget, settings), build)
    result = CircuitResult.from_json(read_json(path / RESULT), path)
    return result if result.thresholds == thresholds else result.relabel(thresholds)
