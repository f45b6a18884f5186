"""Foundation targets: default model's test AUC vs the bias baseline, and training cost.

Trains the default model from scratch in a fresh cache folder (the data comes from the
usual cache), so the timing is a real training run, not a cache hit. Prints a table and
writes JSON to benchmarks/results/foundation.json.

    .venv/bin/python benchmarks/bench_foundation.py [--seeds 0 1 2]
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

from analysis.config import ModelConfig, TrainConfig
from analysis.evaluate import baseline_metrics
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.workspace import open_workspace

OUT = Path(__file__).parent / "results" / "foundation.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    ws = open_workspace()
    t0 = time.perf_counter()
    base = baseline_metrics(ws)
    base_seconds = time.perf_counter() - t0
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            rec = train_recommender(replace(ws, root=Path(tmp)), None, ModelConfig(), TrainConfig(seed=seed),
                                    progress=StderrBars())
            wall = time.perf_counter() - t0
        m, tr = rec.meta["metrics"], rec.meta["training"]
        rows.append({"seed": seed, "test_auc": m["test"]["auc"], "test_acc": m["test"]["acc"],
                     "test_logloss": m["test"]["logloss"], "hr@10": m["ranking"]["hr@10"],
                     "ndcg@10": m["ranking"]["ndcg@10"], "train_seconds": tr["train_seconds"],
                     "wall_seconds_incl_eval": wall, "tokens_per_second": tr["tokens_per_second"],
                     "best_epoch": tr["best_epoch"], "peak_rss_mb": tr["peak_rss_mb"]})
    result = {
        "model": rows, "n_params": rec.meta["n_params"],
        "baseline_user_item_bias": {"test_auc": base["test"]["auc"], "test_acc": base["test"]["acc"],
                                    "test_logloss": base["test"]["logloss"], "hr@10": base["ranking"]["hr@10"],
                                    "ndcg@10": base["ranking"]["ndcg@10"], "seconds": base_seconds},
        "config": {"model": asdict(ModelConfig()), "train": asdict(TrainConfig()), "history": ws.config.history},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine()},
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"{'':>22} {'test AUC':>9} {'ACC':>7} {'LogLoss':>8} {'HR@10':>7} {'NDCG@10':>8} {'train s':>8} "
          f"{'tok/s':>7} {'peak MB':>8}")
    for r in rows:
        print(f"{'model seed ' + str(r['seed']):>22} {r['test_auc']:9.4f} {r['test_acc']:7.4f} {r['test_logloss']:8.4f} "
              f"{r['hr@10']:7.4f} {r['ndcg@10']:8.4f} {r['train_seconds']:8.1f} {r['tokens_per_second']:7.0f} "
              f"{r['peak_rss_mb']:8.0f}")
    b = result["baseline_user_item_bias"]
    print(f"{'user+item bias':>22} {b['test_auc']:9.4f} {b['test_acc']:7.4f} {b['test_logloss']:8.4f} "
          f"{b['hr@10']:7.4f} {b['ndcg@10']:8.4f} {b['seconds']:8.1f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
