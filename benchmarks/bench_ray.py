"""The study's cells on a local Ray instance against the local executor: same results, overhead per cell.

    python benchmarks/bench_ray.py [--users 40] [--cpus 2] [--json out.json]

A tiny study (one deletion draw, one strength, two-step runs, 8 circuit prompts) on the first
`--users` users of MovieLens-100K with a tiny model, run twice from cold caches: cells one after
another here, then as Ray tasks (`ray.init(num_cpus=--cpus)`, one CPU per cell). Prints wall time,
seconds per cell, Ray's start-up, and whether every metric of every cell is identical.
Run it alone: two torch jobs on 2 cores slow each other several-fold.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.cache import cache_root  # noqa: E402
from analysis.circuits.discover import CircuitSettings  # noqa: E402
from analysis.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from analysis.data.loaders import load_dataset  # noqa: E402
from analysis.data.samples import build_interactions  # noqa: E402
from analysis.model.recommender import load_recommender  # noqa: E402
from analysis.model.train import train_recommender  # noqa: E402
from analysis.study import run_and_report  # noqa: E402
from analysis.study.executors import RayExecutor  # noqa: E402
from analysis.study.grid import StudyConfig  # noqa: E402
from analysis.study.result import StudyResult  # noqa: E402
from analysis.workspace import Workspace  # noqa: E402

STUDY = StudyConfig(seeds=(0,), request="users:0.2", lrs=(0.003,), rates=("users:0.2",), levels=("users:0.2",),
                    training_seeds=1, steps=2, circuits=CircuitSettings(n_prompts=8, stability_seeds=1, batch_size=8, ig_steps=2))
MODEL = ModelConfig(n_layer=2, n_head=2, d_model=32, d_mlp=64, dropout=0.0)
TRAIN = TrainConfig(epochs=1, batch_size=32, lr=3e-3, targets_per_sequence=5)


def _rows(result: StudyResult) -> list[dict]:
    return [{k: (Path(v).name if k == "run_dir" else v) for k, v in r.items() if k not in ("seconds", "retrain_seconds")}
            for r in result.rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import ray

    data = load_dataset(None, root=cache_root())
    users = sorted(data.ratings["user_id"].unique())[: args.users]
    ratings = data.ratings[data.ratings["user_id"].isin(users)].reset_index(drop=True)
    data = replace(data, ratings=ratings, users=data.users[data.users["user_id"].isin(users)].reset_index(drop=True))
    interactions = build_interactions(data, history=5)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        roots = {name: Path(tmp) / name for name in ("local", "ray")}
        ws = {name: Workspace(data, interactions, DataConfig(history=5), root) for name, root in roots.items()}
        rec = train_recommender(ws["local"], None, MODEL, TRAIN)
        shutil.copytree(rec.path, roots["ray"] / "models" / rec.path.name)  # the same original: the same keys
        rec_ray = load_recommender(roots["ray"] / "models" / rec.path.name, data)
        os.environ["CURE_JOBS"] = str(args.cpus)  # one torch thread per local job, as each Ray task has
        start = time.perf_counter()
        _, local = run_and_report(ws["local"], rec, STUDY)
        local_s = time.perf_counter() - start
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        executor = RayExecutor(cpus_per_cell=1)
        start = time.perf_counter()
        _, on_ray = run_and_report(ws["ray"], rec_ray, STUDY, executor=executor)
        ray_s = time.perf_counter() - start
        ray.shutdown()
    cells = len(local["rows"])
    out = {"cells": cells, "local_seconds": local_s, "ray_seconds": ray_s, "ray_start_seconds": ray_start,
           "local_per_cell": local_s / cells, "ray_per_cell": ray_s / cells,
           "overhead_per_cell": (ray_s - local_s / args.cpus) / cells,
           "identical": _rows(local) == _rows(on_ray), "cpus": args.cpus, "users": args.users}
    print(f"{'executor':<10} {'cells':>5} {'wall s':>8} {'s/cell':>7}")
    print(f"{'local':<10} {cells:>5} {local_s:>8.1f} {local_s / cells:>7.2f}")
    print(f"{'ray':<10} {cells:>5} {ray_s:>8.1f} {ray_s / cells:>7.2f}   (+ {ray_start:.1f} s to start Ray)")
    print(f"identical results: {out['identical']}; Ray's cost per cell over an ideal {args.cpus}-way split of the "
          f"local time: {out['overhead_per_cell']:+.2f} s")
    text = json.dumps(out, indent=1)
    Path(args.json).write_text(text) if args.json else print(text)


if __name__ == "__main__":
    main()
