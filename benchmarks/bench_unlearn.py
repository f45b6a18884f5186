"""Every unlearning method against doing nothing and against retrain, over deletion draws.

For each request (default users:0.1 and genre:Horror): on the first deletion draw every
method at every strength (Adam lr) with the same budget (one epoch over the forget set);
the strength per method is chosen by the retrain-free rule (analysis/unlearn/strength.py:
the weakest lr whose forgotten users are indistinguishable from never-seen users on
validation-period samples); the other draws run that strength. Reported: retrain distance
(0 = retrain, 1 = as far as doing nothing, either way; the ranking), signed forget-AUC gap
closed, JSD ratio, utility cost (test AUC lost), the matched attack next to retrain's, time. Timing: CURE
warm (groups cached) and cold (lean discovery included) against a retrain measured in the
same process on a fresh cache. Prints tables and writes benchmarks/results/unlearn.json.
Run it alone.

    .venv/bin/python benchmarks/bench_unlearn.py [--requests users:0.1,genre:Horror] [--draws 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from analysis.circuits.discover import CircuitSettings
from analysis.circuits.lean import discover_groups
from analysis.model.recommender import load_recommender
from analysis.config import ModelConfig, TrainConfig
from analysis.model.train import train_recommender
from analysis.pareto import dominates
from analysis.progress import StderrBars
from analysis.unlearn.attack import AttackResult
from analysis.unlearn.strength import StrengthPoint, choose_strength
from analysis.unlearn.lab import retrain_for, unlearn
from analysis.unlearn.record import RunRecord
from analysis.unlearn.run import UnlearnConfig
from analysis.workspace import Workspace, open_workspace

OUT = Path(__file__).parent / "results" / "unlearn.json"
METHODS = ("ga", "graddiff", "npo", "kl", "pcgrad", "salun", "cure")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def row(run: RunRecord, request: str, draw: int) -> dict:
    m, o, r, y = run.metrics, run.original, run.retrain, run.yardstick
    valid_attack, update = run.comparison.attack_valid, run.conflict.applied_update if run.conflict else None
    return {"request": request, "draw": draw, "method": run.method.value, "lr": run.lr,
            "retrain_distance": y.retrain_distance,
            "gap_closed": y.gap_closed.auc_forget, "gap_closed_logloss": y.gap_closed.logloss_forget,
            "gap_closed_mia": y.gap_closed.mia_auc, "jsd_ratio": y.jsd_ratio, "utility_cost": y.utility_cost,
            "valid_drop": o.auc_valid - m.auc_valid, "auc_test": m.auc_test, "auc_forget": m.auc_forget,
            "mia_auc": m.mia_auc, "mia_retrain": r.mia_auc, "jsd_forget": m.jsd_forget,
            "mia_never_seen_auc": m.mia_never_seen_auc, "mia_never_seen_retrain": r.mia_never_seen_auc,
            "mia_never_seen_original": o.mia_never_seen_auc,
            "mia_never_seen_valid_auc": m.mia_never_seen_valid_auc,
            "mia_never_seen_valid_low": valid_attack.interval.run[0] if valid_attack else None,
            "auc_forget_unseen": m.auc_forget_unseen,
            "gap": asdict(y.gap), "over_forgetting": y.over_forgetting,
            "steps_run": run.steps_run, "steps_budget": run.steps_budget,
            "stopped": run.stopped.reason if run.stopped else None, "seconds": run.seconds,
            "applied_update_negative_share": update.negative_share if update else None}


def mean_std(values) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None], dtype=float)
    return (float(v.mean()), float(v.std())) if len(v) else (float("nan"), float("nan"))


def select(rows: list[dict], request: str, method: str) -> float:
    """The retrain-free rule's lr on the sweep's draw (strength.choose_strength; reads only the validation-period
    matched attack); the weakest lr where the attack is not defined."""
    sweep = [r for r in rows if r["request"] == request and r["method"] == method]
    first = min(r["draw"] for r in sweep)
    at = [r for r in sweep if r["draw"] == first and r.get("mia_never_seen_valid_auc") is not None]
    if not at:
        return min(r["lr"] for r in sweep)
    return choose_strength([StrengthPoint(r["lr"], AttackResult.from_record(r["mia_never_seen_valid_auc"],
                                                                            r["mia_never_seen_valid_low"]))
                            for r in at]).strength


def headline(rows: list[dict], request: str, methods) -> list[dict]:
    out = []
    for method in methods:
        lr = select(rows, request, method)
        at = [r for r in rows if r["request"] == request and r["method"] == method and r["lr"] == lr]
        entry = {"method": method, "lr": lr, "n_draws": len(at)}
        for key in ("retrain_distance", "gap_closed", "jsd_ratio", "utility_cost", "mia_auc", "mia_retrain",
                    "mia_never_seen_auc", "mia_never_seen_retrain", "mia_never_seen_original", "auc_forget_unseen",
                    "seconds", "steps_run"):
            entry[key], entry[f"{key}_std"] = mean_std(r[key] for r in at)
        out.append(entry)
    return out


def pareto_check(rows: list[dict], request: str) -> dict:
    """Which baselines (any strength, mean over draws) land nearer the retrain at the same or lower utility cost
    than CURE at its selected strength (dominate it on retrain distance and cost)? Overshooting the retrain
    counts against a run like falling short, so an over-forgetting baseline never "beats" CURE here."""
    points = {}
    for r in rows:
        if r["request"] == request and r["method"] != "retrain":
            points.setdefault((r["method"], r["lr"]), []).append(r)
    means = {k: (mean_std(x["retrain_distance"] for x in v)[0], mean_std(x["utility_cost"] for x in v)[0])
             for k, v in points.items()}
    lr = select(rows, request, "cure")
    cure = means[("cure", lr)]
    beaten_by = [{"method": m, "lr": l, "retrain_distance": d, "utility_cost": c} for (m, l), (d, c) in means.items()
                 if m != "cure" and dominates((d, -c), (cure[0], -cure[1]))]
    return {"cure": {"lr": lr, "retrain_distance": cure[0], "utility_cost": cure[1]}, "beaten_by": beaten_by}


def timing(ws: Workspace, original, request: str, bars, bigger: bool = False) -> dict:
    """CURE warm and cold against a retrain, all in this process on a fresh cache; `bigger`: on a model 2x
    deeper and 2x wider than the default (trained first, untimed), to see how the ratio moves with cost."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-unlearn-"))
    try:
        fresh = Workspace(ws.data, ws.interactions, ws.config, tmp)
        if bigger:
            shape = ModelConfig(n_layer=8, n_head=4, d_model=256, d_mlp=1024)
            orig = train_recommender(fresh, None, shape, TrainConfig(), progress=bars)
        else:
            shutil.copytree(original.path, tmp / "models" / original.path.name)
            orig = load_recommender(tmp / "models" / original.path.name, ws.data)
        forget = fresh.forget_set(request, seed=0)
        _, retrain_seconds = timed(lambda: retrain_for(fresh, orig, forget)[0])
        _, lean_seconds = timed(lambda: discover_groups(fresh, orig, forget, CircuitSettings()))
        run, _ = timed(lambda: unlearn(fresh, orig, forget, UnlearnConfig(method="cure")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"request": request, "model": "8 layers x d256 (2x deeper, 2x wider)" if bigger else "default 4 x d128",
            "retrain_seconds": retrain_seconds, "lean_discovery_seconds": lean_seconds,
            "cure_steps_seconds": run.seconds, "cure_warm_over_retrain": run.seconds / retrain_seconds,
            "cure_cold_over_retrain": (run.seconds + lean_seconds) / retrain_seconds,
            "cure_gap_closed": run.yardstick.gap_closed.auc_forget,
            "cure_retrain_distance": run.yardstick.retrain_distance,
            "cure_utility_cost": run.yardstick.utility_cost}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", default="users:0.1,genre:Horror")
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--keep", action="store_true",
                        help="keep the last run's rows of the methods not rerun now (their keys and results unchanged)")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--bigger", action="store_true", help="also time CURE vs retrain on a 2x deeper, 2x wider model")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON goes")
    args = parser.parse_args()
    bars = StderrBars()
    ws = open_workspace()
    original = train_recommender(ws, progress=bars)
    methods = args.methods.split(",")
    rows = []
    if args.keep and args.out.is_file():
        rows = [r for r in json.loads(args.out.read_text())["rows"]
                if r["method"] not in methods and r["method"] != "retrain"]
    for request in args.requests.split(","):
        draws = args.draws if request.split(":")[0] in ("users", "interactions") and "," not in request else [0]
        for k, draw in enumerate(draws):
            forget = ws.forget_set(request, seed=draw)
            for method in methods:
                for lr in (args.lrs if k == 0 else [select(rows, request, method)]):
                    run = unlearn(ws, original, forget, UnlearnConfig(method=method, lr=lr), progress=bars)
                    rows.append(row(run, request, draw))
            rows.append(row(unlearn(ws, original, forget, UnlearnConfig(method="retrain")), request, draw))
    requests = args.requests.split(",")
    out = {"default_config": UnlearnConfig().key(), "rows": rows,
           "headline": {q: headline(rows, q, [m for m in METHODS if any(r["method"] == m for r in rows)])
                        for q in requests},
           "pareto": {q: pareto_check(rows, q) for q in requests if "cure" in methods},
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads()}}
    if not args.no_timing:
        out["timing"] = timing(ws, original, requests[0], bars)
    if args.bigger:
        out["timing_bigger"] = timing(ws, original, requests[0], bars, bigger=True)
    if args.out.is_file():  # timings not rerun this time are kept from the last run (they say which model they timed)
        previous = json.loads(args.out.read_text())
        out.update({k: previous[k] for k in ("timing", "timing_bigger") if k in previous and k not in out})
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))

    for q in requests:
        ref = next(r for r in rows if r["request"] == q and r["method"] == "retrain")
        print(f"\n{q}: original-retrain forget-AUC gap {ref['gap']['auc_forget']:.4f} "
              f"[{ref['gap']['low']:.4f}, {ref['gap']['high']:.4f}] (draw {ref['draw']}); strengths chosen by the "
              f"retrain-free rule")
        print("| method | lr | retrain distance | gap closed (signed) | JSD ratio | utility cost | matched attack | steps "
              "| s |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| original (do nothing) | - | 1 | 0 | 1 | 0 | {mean_std(r['mia_never_seen_original'] for r in rows if r['request'] == q)[0]:.3f} | 0 | 0 |")
        for h in out["headline"][q]:
            print(f"| {h['method']} | {h['lr']:g} | {h['retrain_distance']:.2f} ± {h['retrain_distance_std']:.2f} | "
                  f"{h['gap_closed']:.2f} ± {h['gap_closed_std']:.2f} | "
                  f"{h['jsd_ratio']:.2f} ± {h['jsd_ratio_std']:.2f} | {h['utility_cost']:.4f} ± "
                  f"{h['utility_cost_std']:.4f} | {h['mia_never_seen_auc']:.3f} | {h['steps_run']:.0f} | "
                  f"{h['seconds']:.1f} |")
        print("| retrain (gold) | - | 0 | 1 | 0 | "
              f"{mean_std(r['utility_cost'] for r in rows if r['request'] == q and r['method'] == 'retrain')[0]:.4f}"
              f" | {mean_std(r['mia_never_seen_retrain'] for r in rows if r['request'] == q)[0]:.3f} | - | - |")
        if q in out["pareto"] and q in out["headline"]:
            p = out["pareto"][q]
            print(f"CURE at lr {p['cure']['lr']:g}: retrain distance {p['cure']['retrain_distance']:.2f}, cost "
                  f"{p['cure']['utility_cost']:.4f}; baselines nearer the retrain at <= cost: "
                  + (", ".join(f"{b['method']}@{b['lr']:g} ({b['retrain_distance']:.2f}, {b['utility_cost']:.4f})"
                               for b in p["beaten_by"]) or "none"))
    for key in ("timing", "timing_bigger"):
        if key in out:
            print(f"\n{key}:", json.dumps(out[key], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
