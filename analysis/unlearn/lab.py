"""The unlearning lab's entry points: run (or load) a method on a request, list stored runs.

A run is stored under cache/runs/<key> (key = data + original model + request + config):
the unlearned checkpoint (`model/`, safetensors; with an adapter, merged, and the adapter
itself in `model/adapter/`), and `run.json` with the configuration, metrics next to retrain
and the original, conflict before/after/applied, per-step curves, the circuit groups used,
and wall times. Nothing is visible before the run is complete.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..cache import artefact_dir, build_or_load, config_key, read_json, write_json_atomic
from ..circuits.discover import model_identity
from ..circuits.lean import discover_groups
from ..config import CODE_VERSION
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
from .run import MODEL, RUN, UnlearnConfig, unlearn_steps

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
    return config_key({"code": CODE_VERSION, "data": ws.fingerprint, "history": ws.config.history,
                       "model": model_identity(original), "forget": forget.key, "config": cfg.key()})


def unlearn(ws: Workspace, original: Recommender, forget: ForgetSet, cfg: UnlearnConfig,
            progress: ProgressFn | None = None, on_step: Callable[[dict], None] | None = None,
            rankings: bool = True) -> dict:
    """Run (or load) one unlearning configuration; returns the stored run.json plus its folder.

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
                        "sizes": result.node_groups.sizes(), "coverage": result.coverage_view(),
                        "groups": {m: g.value for m, g in groups.items()}, "random_groups": cfg.random_groups}
        if cfg.method is UnlearningMethod.RETRAIN:
            model_rec, steps = retrain, {"seconds": retrain.meta["training"]["train_seconds"], "curves": [],
                                         "rules": {}, "conflict": None, "stopped": None, "steps_run": 0,
                                         "steps_budget": 0}
        else:
            steps = unlearn_steps(ws, original, forget, cfg, groups, progress, on_step)
            meta = {**original.meta, "unlearning": {"method": cfg.method.value, "forget": forget.summary(),
                                                   "config": cfg.key()}}
            model, wrapper = steps.pop("model"), steps.pop("adapter")
            if wrapper is not None:  # the adapter itself, then merged: what the bridge and the metrics read
                model = save_and_merge(wrapper, tmp / MODEL / ADAPTER).eval()
            model_rec = Recommender(model, original.tokenizer, original.fmt, meta)
            model_rec.save(tmp / MODEL)
            model_rec = load_recommender(tmp / MODEL, ws.data, check=False)
        comparison = compare_to_retrain(model_rec, retrain, original, ws, forget, progress, rankings)
        write_json_atomic(tmp / RUN, {
            "method": cfg.method.value, "config": cfg.key(), "forget": forget.summary(),
            "seconds": steps["seconds"], "stage_seconds": steps.get("stage_seconds"),
            "retrain_seconds": retrain.meta["training"]["train_seconds"],
            "retrain_trained_in_this_run": trained_now, "circuits": circuits, "rules": steps["rules"],
            "conflict": steps["conflict"], "curves": steps["curves"], "stopped": steps["stopped"],
            "steps_run": steps["steps_run"], "steps_budget": steps["steps_budget"],
            "metrics": comparison["metrics"]["run"], "retrain": comparison["metrics"]["retrain"],
            "original": comparison["metrics"]["original"], "ranking_agreement": comparison["ranking_agreement"],
            "yardstick": comparison["yardstick"], "per_user": comparison["per_user"],
            "model_dir": str(retrain.path) if cfg.method is UnlearningMethod.RETRAIN else None,
            "original_dir": str(original.path), "retrain_dir": str(retrain.path),
        })

    path = build_or_load(ws.root, RUNS, run_key(ws, original, forget, cfg), build, on_wait=lambda msg: progress(msg, 0, 1))
    return load_run(path)


def load_run(path: Path) -> dict:
    path = Path(path)
    run = read_json(path / RUN)
    run["run_dir"] = str(path)
    if run.get("model_dir") is None:
        run["model_dir"] = str(path / MODEL)
    return run


def run_summary(run: dict) -> dict:
    """One stored run in the runs table's terms (the lab and the Evidence page show the same)."""
    m = run["metrics"]
    return {"method": run["method"], "steps": run.get("steps_run"), "lr": run["config"].get("lr"),
            "retrain_distance": m.get("retrain_distance"), "gap_closed": (m.get("gap_closed") or {}).get("auc_forget"),
            "utility_cost": m.get("utility_cost"), "matched_attack": (m.get("mia_never_seen") or {}).get("run"),
            "auc_test": m["auc_test"], "auc_forget": m["auc_forget"], "jsd_forget": m["jsd_forget"],
            "seconds": run["seconds"], "run": Path(run["run_dir"]).name}


def reference_summaries(run: dict) -> list[dict]:
    """Do nothing (the original) and the retrain, as rows beside a request's runs: distance 1 and 0 by
    definition, the retrain's own utility cost, and both models' own metrics as the run stored them."""
    o, r = run["original"], run["retrain"]
    attack = run["metrics"].get("mia_never_seen") or {}
    return [{"method": "do nothing (original)", "retrain_distance": 1.0, "gap_closed": 0.0, "utility_cost": 0.0,
             "matched_attack": attack.get("original"), "auc_test": o["auc_test"], "auc_forget": o["auc_forget"],
             "jsd_forget": o["jsd_forget"], "seconds": 0.0},
            {"method": "retrain (gold)", "retrain_distance": 0.0, "gap_closed": 1.0,
             "utility_cost": o["auc_test"] - r["auc_test"], "matched_attack": attack.get("retrain"),
             "auc_test": r["auc_test"], "auc_forget": r["auc_forget"], "jsd_forget": 0.0,
             "seconds": run["retrain_seconds"]}]


def list_runs(root: Path) -> list[dict]:
    """Every complete run under cache/runs (newest first); unreadable ones are skipped, not fatal."""
    runs = []
    for folder in sorted((Path(root) / RUNS).glob("[0-9a-f]*"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            runs.append(load_run(folder))
        except (CacheError, OSError, ValueError, KeyError):
            continue
    return runs

