"""Every unlearning method on the default request (users:0.1) and the default model, one budget.

Measured in one process: the retrain (trained from scratch into a temporary cache, so
its time is real), circuit discovery cold (temporary cache) and cached, then every method
at the default budget and at a small learning-rate sweep (same steps and batch). Prints
a table and writes benchmarks/results/unlearn.json.

    .venv/bin/python benchmarks/bench_unlearn.py [--lrs 0.001 0.003 0.01]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from analysis.circuits.discover import CircuitSettings, discover_circuits
from analysis.config import ModelConfig, TrainConfig
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.unlearn.lab import unlearn
from analysis.unlearn.run import UnlearnConfig
from analysis.workspace import open_workspace

OUT = Path(__file__).parent / "results" / "unlearn.json"
SPEC = "users:0.1"
METHODS = ("ga", "graddiff", "npo", "kl", "pcgrad", "cure")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def row(run: dict) -> dict:
    m = run["metrics"]
    conflict = run["conflict"] or {}
    return {"method": run["method"], "lr": run["config"].get("lr"), "jsd_forget": m["jsd_forget"],
            "jsd_test": m["jsd_test"], "auc_test": m["auc_test"], "auc_forget": m["auc_forget"], "mia_auc": m["mia_auc"],
            "top10_overlap_forget_users": run["ranking_agreement"]["forget_users"],
            "top10_overlap_retain_users": run["ranking_agreement"]["retain_users"],
            "conflict_before": (conflict.get("before") or {}).get("negative_share"),
            "conflict_after": (conflict.get("after") or {}).get("negative_share"),
            "applied_negative_share": (conflict.get("applied") or {}).get("negative_share"),
            "seconds": run["seconds"], "run_dir": run["run_dir"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.001, 0.003, 0.01])
    args = parser.parse_args()
    bars = StderrBars()
    ws = open_workspace()
    original = train_recommender(ws, progress=bars)
    forget = ws.forget_set(SPEC)

    with tempfile.TemporaryDirectory() as tmp:  # real, uncached timings in this process
        fresh = replace(ws, root=Path(tmp))
        retrain_fresh, retrain_wall = timed(lambda: train_recommender(fresh, forget, ModelConfig(), TrainConfig()))
        retrain_train_seconds = retrain_fresh.meta["training"]["train_seconds"]
        _, circuits_cold = timed(lambda: discover_circuits(fresh, original, forget, CircuitSettings()))
        _, circuits_groups_only = timed(lambda: discover_circuits(
            fresh, original, forget, CircuitSettings(stability_seeds=1)))
    _, circuits_cached = timed(lambda: discover_circuits(ws, original, forget, CircuitSettings(), progress=bars))

    default = UnlearnConfig()
    rows = []
    for lr in sorted(set(args.lrs) | {default.lr}):
        for method in METHODS:
            run = unlearn(ws, original, forget, UnlearnConfig(method=method, lr=lr), progress=bars)
            rows.append(row(run))
    retrain_run = unlearn(ws, original, forget, UnlearnConfig(method="retrain"), progress=bars)
    reference = {"retrain": retrain_run["retrain"], "original": retrain_run["original"]}

    at_default = [r for r in rows if r["lr"] == default.lr]
    cure = next(r for r in at_default if r["method"] == "cure")
    graddiff = next(r for r in at_default if r["method"] == "graddiff")
    best_jsd = min(at_default, key=lambda r: r["jsd_forget"])
    out = {
        "request": SPEC, "default_config": UnlearnConfig().key(), "rows": rows, "reference": reference,
        "timing": {"retrain_train_seconds": retrain_train_seconds, "retrain_wall_seconds_incl_eval": retrain_wall,
                   "circuits_cold_seconds": circuits_cold, "circuits_groups_only_cold_seconds": circuits_groups_only,
                   "circuits_cached_seconds": circuits_cached, "cure_steps_seconds": cure["seconds"],
                   "cure_over_retrain_cached_circuits": cure["seconds"] / retrain_train_seconds,
                   "cure_over_retrain_with_cold_groups_only": (cure["seconds"] + circuits_groups_only) / retrain_train_seconds},
        "targets": {"cure_lowest_jsd_forget": best_jsd["method"] == "cure",
                    "cure_auc_test_within_0.01_of_retrain": abs(cure["auc_test"] - reference["retrain"]["auc_test"]) <= 0.01,
                    "cure_applied_conflict_below_graddiff": cure["applied_negative_share"] < graddiff["applied_negative_share"],
                    "cure_time_le_1_20_retrain_cached_circuits": cure["seconds"] <= retrain_train_seconds / 20,
                    "cure_mia_within_0.03_of_retrain": abs(cure["mia_auc"] - reference["retrain"]["mia_auc"]) <= 0.03},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))

    print("\n| method | lr | JSD forget | JSD test | AUC test | AUC forget | MIA AUC | top-10 kept (forget / retain users) "
          "| conflict applied | before -> after | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, ref in reference.items():
        print(f"| {name} | - | {ref['jsd_forget']:.4f} | {ref['jsd_test']:.4f} | {ref['auc_test']:.4f} | "
              f"{ref['auc_forget']:.4f} | {ref['mia_auc']:.4f} | | | | |")
    for r in rows:
        print(f"| {r['method']} | {r['lr']} | {r['jsd_forget']:.4f} | {r['jsd_test']:.4f} | {r['auc_test']:.4f} | "
              f"{r['auc_forget']:.4f} | {r['mia_auc']:.4f} | {r['top10_overlap_forget_users']:.2f} / "
              f"{r['top10_overlap_retain_users']:.2f} | {r['applied_negative_share']:.3f} | "
              f"{r['conflict_before']:.2f} -> {r['conflict_after']:.2f} | {r['seconds']:.1f} |")
    print("\ntiming:", json.dumps(out["timing"], indent=1))
    print("targets:", json.dumps(out["targets"], indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
