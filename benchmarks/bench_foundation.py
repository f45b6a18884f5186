"""Foundation targets: the default model against the bias baseline, and the recipe variants behind it.

Each variant trains from scratch in a fresh cache folder (the data comes from the usual
cache), so every time is a real training run, not a cache hit. Prints a table and writes
JSON to benchmarks/results/foundation[-<data>].json.

    .venv/bin/python benchmarks/bench_foundation.py [--data latest-small] [--variants default neg4] [--seeds 0]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from analysis.config import DataConfig, ModelConfig, TrainConfig
from analysis.model.evaluate import ModelEvaluation, baseline_metrics
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.workspace import open_workspace

RESULTS = Path(__file__).parent / "results"

# name -> (model config, train config) overrides of the defaults; "default" is whatever config.py says
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "no-negatives": ({}, {"unrated_negatives": 0}),
    "neg1": ({}, {"unrated_negatives": 1}),
    "neg4": ({}, {"unrated_negatives": 4}),
    "neg8": ({}, {"unrated_negatives": 8}),
    "neg16": ({}, {"unrated_negatives": 16}),
    "neg8-2ep": ({}, {"unrated_negatives": 8, "epochs": 2}),
    "neg8-4ep": ({}, {"unrated_negatives": 8, "epochs": 4}),
    "neg4-lr1e-3": ({}, {"unrated_negatives": 4, "lr": 1e-3}),
    "neg4-wd0.1": ({}, {"unrated_negatives": 4, "weight_decay": 0.1}),
    "neg4-drop0.2": ({"dropout": 0.2}, {"unrated_negatives": 4}),
}


def run_variant(ws, name: str, seed: int) -> dict:
    model_over, train_over = VARIANTS[name]
    model_cfg, train_cfg = replace(ModelConfig(), **model_over), replace(TrainConfig(seed=seed), **train_over)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rec = train_recommender(replace(ws, root=Path(tmp)), None, model_cfg, train_cfg, progress=StderrBars())
        wall = time.perf_counter() - t0
    m, tr = ModelEvaluation.of(rec), rec.meta["training"]
    return {"variant": name, "seed": seed, "test_auc": m.test.auc, "test_acc": m.test.acc,
            "test_logloss": m.test.logloss, "hr@10": m.ranking.hit_rate, "ndcg@10": m.ranking.ndcg,
            "train_seconds": tr["train_seconds"], "wall_seconds_incl_eval": wall,
            "tokens_per_second": tr["tokens_per_second"], "best_epoch": tr["best_epoch"],
            "peak_rss_mb": tr["peak_rss_mb"], "n_params": rec.meta["n_params"],
            "model_config": asdict(model_cfg), "train_config": asdict(train_cfg)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None, help="named source or folder (default: MovieLens-100K)")
    parser.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    ws = open_workspace(DataConfig(source=args.data))
    t0 = time.perf_counter()
    base = baseline_metrics(ws)
    base_seconds = time.perf_counter() - t0
    rows = [run_variant(ws, name, seed) for name in args.variants for seed in args.seeds]
    bias = {"test_auc": base.test.auc, "test_acc": base.test.acc, "test_logloss": base.test.logloss,
            "hr@10": base.ranking.hit_rate, "ndcg@10": base.ranking.ndcg, "seconds": base_seconds}
    result = {
        "data": ws.data.name, "model": rows, "baseline_user_item_bias": bias,
        "config": {"model": asdict(ModelConfig()), "train": asdict(TrainConfig()), "history": ws.config.history},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine()},
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"data: {ws.data.name}")
    print(f"{'':>24} {'test AUC':>9} {'ACC':>7} {'LogLoss':>8} {'HR@10':>7} {'NDCG@10':>8} {'train s':>8} "
          f"{'tok/s':>7} {'epoch':>6}")
    for r in rows:
        print(f"{r['variant'] + ' seed ' + str(r['seed']):>24} {r['test_auc']:9.4f} {r['test_acc']:7.4f} "
              f"{r['test_logloss']:8.4f} {r['hr@10']:7.4f} {r['ndcg@10']:8.4f} {r['train_seconds']:8.1f} "
              f"{r['tokens_per_second']:7.0f} {r['best_epoch']:6d}")
    print(f"{'user+item bias':>24} {bias['test_auc']:9.4f} {bias['test_acc']:7.4f} {bias['test_logloss']:8.4f} "
          f"{bias['hr@10']:7.4f} {bias['ndcg@10']:8.4f} {bias['seconds']:8.1f}")
    out = RESULTS / (f"foundation-{args.data}.json" if args.data else "foundation.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
