"""The unlearning lab's entry points: run (or load) a method on a request, list stored runs.

A run is stored under cache/runs/<key> (key = data + original model + request + config):
the unlearned checkpoint (`model/`, safetensors; with an adapter, merged, and the adapter
itself in `model/adapter/`), and `run.json` with the configuration, metrics next to retrain
and the original, conflict before/after/applied, per-step curves, the circuit groups used,
and wall times. Nothing is visible before the run is complete.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..cache import artefact_dir, build_or_load, config_key, read_json, write_json_atomic
from ..circuits.discover import model_identity
from ..circuits.lean import discover_groups
from ..data.forget import ForgetSet
from ..errors import CacheError
from ..model.adapters import ADAPTER, adapter_of, save_and_merge
from ..model.recommender import Recommender, load_recommender
from ..model.train import MODELS, model_key, train_recommender, training_recipe
from ..progress import ProgressFn, or_silent
from ..workspace import Workspace
from .ablation import random_groups
from .compare import compare_to_retrain
from .methods import UnlearningMethod
from .record import MODEL, RUN, RunRecord
from .run import StepsResult, UnlearnConfig, unlearn_steps

RUNS = "runs"


def retrain_cached(ws: Workspace, original: Recommender, forget: ForgetSet) -> bool:
    """Whether the request's retrain is in the cache already (nothing is trained)."""
    model_cfg, train_cfg, backbone = training_recipe(original, "there is no retrain to compare with")
    return artefact_dir(ws.root, MODELS, model_key(ws, forget, model_cfg, train_cfg, backbone,
                                                   adapter_of(original.meta))).exists()


def retrain_for(ws: Workspace, original: Recommender, forget: ForgetSet,
                progress: ProgressFn | None = None) -> tuple[Recommender, bool]:
    """The exact retrain of the original's recipe without the forget set; and whether it was trained now."""
    model_cfg, train_cfg, backbone = training_recipe(original, "there is no retrain to compare with")
    adapter = adapter_of(original.meta)  # a LoRA-trained original is retrained with the same adapter
    cached = retrain_cached(ws, original, forget)
    return train_recommender(ws, forget, model_cfg, train_cfg, backbone=backbone, progress=progress,
                             adapter=adapter), not cached


def run_key(ws: Workspace, original: Recommender, forget: ForgetSet, cfg: UnlearnConfig) -> str:
    # the config's key names the budget (epochs, optimizer, stop), so no run of the SGD era shares a key
    return config_key({**ws.key_core(model_identity(original), forget), "config": cfg.key()})


def unlearn(ws: Workspace, original: Recommender, forget: ForgetSet, cfg: UnlearnConfig,
            progress: ProgressFn | None = None, on_step: Callable[[dict], None] | None = None,
            rankings: bool = True) -> RunRecord:
    """Run (or load) one unlearning configuration; returns its stored record.

    `on_step` receives each step's curve row while the run goes (for live plots). Without `rankings` the
    run stores no ranking agreement (compare.ranking_agreement computes it when Compare shows the run);
    the key does not change, since the run itself is the same.
    """
    progress = or_silent(progress)

    def build(tmp: Path) -> None:
        retrain, trained_now = retrain_for(ws, original, forget, progress)
        groups, circuits = None, None
        if cfg.groups:
            groups, circuits = cfg.given_groups, {"given": True, "groups": dict(cfg.groups)}
        elif cfg.uses_circuits:
            start = time.perf_counter()
            result = discover_groups(ws, original, forget, cfg.circuits, cfg.thresholds, progress)
            groups = result.labels
            if cfg.random_groups is not None:  # the ablation: same sizes per node kind, nodes drawn at random
                groups = random_groups(groups, result.table, cfg.random_groups)
            circuits = {"path": str(result.path), "seconds_this_call": time.perf_counter() - start,
                        "compute_seconds": result.seconds["total"], "from_full_result": result.from_full,
                        "sizes": result.node_groups.sizes(), "coverage": result.coverage_view().to_json(),
                        "groups": {m: g.value for m, g in groups.items()}, "random_groups": cfg.random_groups}
        retrain_seconds = retrain.meta["training"]["train_seconds"]
        if cfg.method is UnlearningMethod.RETRAIN:
            model_rec, steps = retrain, StepsResult.none(retrain_seconds)
        else:
            steps = unlearn_steps(ws, original, forget, cfg, groups, progress, on_step)
            meta = {**original.meta, "unlearning": {"method": cfg.method.value, "forget": asdict(forget.summary()),
                                                   "config": cfg.key()}}
            model = steps.model
            if steps.adapter is not None:  # the adapter itself, then merged: what the bridge and the metrics read
                model = save_and_merge(steps.adapter, tmp / MODEL / ADAPTER).eval()
            model_rec = Recommender(model, original.tokenizer, original.fmt, meta)
            model_rec.save(tmp / MODEL)
            model_rec = load_recommender(tmp / MODEL, ws.data, check=False)
        comparison = compare_to_retrain(model_rec, retrain, original, ws, forget, progress, rankings)
        record = RunRecord(
            cfg.method, cfg.key(), forget.summary(), steps.seconds, retrain_seconds, trained_now,
            circuits, steps.rules, steps.conflict, tuple(steps.curves), steps.stopped, steps.steps_run,
            steps.steps_budget, comparison, original_dir=str(original.path), retrain_dir=str(retrain.path),
            model_dir=str(retrain.path) if cfg.method is UnlearningMethod.RETRAIN else "",
            stage_seconds=steps.stage_seconds)
        write_json_atomic(tmp / RUN, record.to_json())

    path = build_or_load(ws.root, RUNS, run_key(ws, original, forget, cfg), build, on_wait=lambda msg: progress(msg, 0, 1))
    return load_run(path)


def load_run(path: Path) -> RunRecord:
    path = Path(path)
    return RunRecord.from_json(read_json(path / RUN), path)


@dataclass(frozen=True)
class RunRow:
    """One row of the runs table (the lab and the Evidence page show the same); the references are rows too."""
    method: str
    retrain_distance: float | None
    gap_closed: float | None
    utility_cost: float | None
    matched_attack: float | None
    auc_test: float
    auc_forget: float
    jsd_forget: float
    seconds: float
    steps: int | None = None
    lr: float | None = None
    run: str | None = None


def run_summary(run: RunRecord) -> RunRow:
    """One stored run in the runs table's terms."""
    m, y, attack = run.metrics, run.yardstick, run.comparison.attack
    return RunRow(run.method.value, y.retrain_distance, y.gap_closed.auc_forget, y.utility_cost,
                  attack.auc.run if attack else None, m.auc_test, m.auc_forget, m.jsd_forget, run.seconds,
                  run.steps_run, run.lr, run.name)


def reference_summaries(run: RunRecord) -> list[RunRow]:
    """Do nothing (the original) and the retrain, as rows beside a request's runs: distance 1 and 0 by
    definition, the retrain's own utility cost, and both models' own metrics as the run stored them."""
    o, r, attack = run.original, run.retrain, run.comparison.attack
    return [RunRow("do nothing (original)", 1.0, 0.0, 0.0, attack.auc.original if attack else None, o.auc_test,
                   o.auc_forget, o.jsd_forget, 0.0),
            RunRow("retrain (gold)", 0.0, 1.0, o.auc_test - r.auc_test, attack.auc.retrain if attack else None,
                   r.auc_test, r.auc_forget, 0.0, run.retrain_seconds)]


def list_runs(root: Path) -> list[RunRecord]:
    """Every complete run under cache/runs (newest first); unreadable ones are skipped, not fatal."""
    runs = []
    for folder in sorted((Path(root) / RUNS).glob("[0-9a-f]*"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            runs.append(load_run(folder))
        except (CacheError, OSError, ValueError, KeyError):
            continue
    return runs

