"""Issue 24's targets: verdicts that over-forgetting cannot win, users no model saw, and the ablation.

On users:0.1 with the default model recipe, for each training seed (the original and every
retrain trained with it) and each deletion draw:

1. the matched attack (forgotten vs never-seen users, training period) of the retrain and
   the original, with their user-bootstrap intervals;
2. the ablation arms, each at the strength the retrain-free rule picks on the first (draw,
   seed) pair (analysis/unlearn/strength.py; reads the validation-period attack only):
   uniform NPO, NPO + PCGrad, NPO + SalUn, CURE, and CURE with its groups shuffled within
   each node kind (same sizes: does the circuit matter?);
3. the lab's default CURE run (UnlearnConfig()) on every training seed;
4. per arm, retrain distance, signed gap closed, utility cost, the matched attack and the
   forget metrics on never-trained samples: mean over (draw, seed) pairs with a 95%
   bootstrap interval (scipy.stats.bootstrap over pairs), and CURE's paired differences
   against random groups and against uniform NPO.

Prints tables and writes benchmarks/results/verdicts.json. Run it alone (2 cores).

    .venv/bin/python benchmarks/bench_verdicts.py [--draws 0 1 2] [--seeds 0 1] [--lrs 1e-4 3e-4 1e-3]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from analysis.config import ModelConfig, TrainConfig
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.study.summary import mean_interval
from analysis.unlearn.attack import AttackResult
from analysis.unlearn.record import RunRecord
from analysis.unlearn.lab import unlearn
from analysis.unlearn.run import UnlearnConfig
from analysis.unlearn.strength import StrengthPoint, choose_strength
from analysis.unlearn.yardstick import retrain_distance
from analysis.workspace import open_workspace

OUT = Path(__file__).parent / "results" / "verdicts.json"
ARMS = {"npo": {"method": "npo"}, "npo+pcgrad": {"method": "pcgrad", "objective": "npo"},
        "npo+salun": {"method": "salun", "objective": "npo"}, "cure": {"method": "cure"},
        "cure (random groups)": {"method": "cure", "random_groups": 0}}
KEYS = ("retrain_distance", "gap_closed", "utility_cost", "attack", "attack_valid", "unseen_minus_retrain")


def row(run: RunRecord, arm: str, draw: int, seed: int) -> dict:
    m, o, r, y = run.metrics, run.original, run.retrain, run.yardstick
    attack, valid = run.comparison.attack, run.comparison.attack_valid
    return {"arm": arm, "draw": draw, "seed": seed, "lr": run.lr,
            "retrain_distance": y.retrain_distance, "gap_closed": y.gap_closed.auc_forget,
            "utility_cost": y.utility_cost, "retrain_cost": o.auc_test - r.auc_test,
            "auc_forget": m.auc_forget, "auc_forget_original": o.auc_forget, "auc_forget_retrain": r.auc_forget,
            "attack": attack.auc.run if attack else None, "attack_original": attack.auc.original if attack else None,
            "attack_retrain": attack.auc.retrain if attack else None,
            "attack_interval": {k: list(v) for k, v in attack.interval.to_json().items()} if attack else None,
            "attack_valid": valid.auc.run if valid else None, "attack_valid_low": valid.interval.run[0] if valid else None,
            "attack_valid_original": valid.auc.original if valid else None,
            "attack_valid_retrain": valid.auc.retrain if valid else None,
            # on the forgotten users' never-trained samples the original-retrain gap is ~0.002 (nothing to close), so
            # the run's AUC there against the retrain's: negative = collateral damage below retraining
            "unseen_gap": o.auc_forget_unseen - r.auc_forget_unseen,
            "unseen_minus_retrain": m.auc_forget_unseen - r.auc_forget_unseen,
            "auc_forget_unseen": m.auc_forget_unseen, "seconds": run.seconds}


def interval(values: list[float | None]) -> dict:
    """Mean [95% bootstrap interval over pairs] of the values present (study.summary.mean_interval)."""
    return mean_interval([float(x) for x in values if x is not None]).to_json()


def fmt(stat: dict, digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    if stat["low"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--request", default="users:0.1")
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    bars, start = StderrBars(), time.perf_counter()
    ws = open_workspace()
    arms = args.arms.split(",")
    originals = {s: train_recommender(ws, None, ModelConfig(), TrainConfig(seed=s), progress=bars) for s in args.seeds}
    pairs = [(d, s) for s in args.seeds for d in args.draws]
    first = pairs[0]
    rows, sweep, chosen = [], [], {}
    for arm in arms:  # the rule's sweep on the first pair
        at = []
        for lr in args.lrs:
            run = unlearn(ws, originals[first[1]], ws.forget_set(args.request, seed=first[0]),
                          UnlearnConfig(lr=lr, **ARMS[arm]), progress=bars)
            at.append(row(run, arm, *first))
        sweep += at
        points = [StrengthPoint(r["lr"], AttackResult.from_record(r["attack_valid"], r["attack_valid_low"]))
                  for r in at if r["attack_valid"] is not None]
        choice = choose_strength(points) if points else None
        chosen[arm] = {"lr": choice.strength if choice else min(args.lrs), "reason": choice.reason if choice else
                       "no attack"}
        rows.append(next(r for r in at if r["lr"] == chosen[arm]["lr"]))
    for draw, seed in pairs[1:]:
        forget = ws.forget_set(args.request, seed=draw)
        for arm in arms:
            run = unlearn(ws, originals[seed], forget, UnlearnConfig(lr=chosen[arm]["lr"], **ARMS[arm]), progress=bars)
            rows.append(row(run, arm, draw, seed))
    default = [row(unlearn(ws, originals[s], ws.forget_set(args.request, seed=args.draws[0]), UnlearnConfig(lr=lr),
                           progress=bars), name, args.draws[0], s) for s in args.seeds
               for name, lr in (("cure (lab default)", UnlearnConfig.lr), ("cure (old default 3e-4)", 3e-4))]

    refs = {(r["draw"], r["seed"]): r for r in rows}
    table = {arm: {k: interval([r[k] for r in rows if r["arm"] == arm]) for k in KEYS} for arm in arms}
    paired = {}
    for other in ("cure (random groups)", "npo", "npo+pcgrad", "npo+salun"):
        if "cure" in arms and other in arms:
            diff = {k: interval([a[k] - b[k] for a in rows if a["arm"] == "cure" for b in rows
                                 if b["arm"] == other and (b["draw"], b["seed"]) == (a["draw"], a["seed"])
                                 and a[k] is not None and b[k] is not None]) for k in ("retrain_distance",
                                                                                        "utility_cost", "attack")}
            paired[f"cure - {other}"] = diff
    out = {
        "request": args.request, "pairs": pairs, "lrs": args.lrs, "chosen": chosen, "rows": rows, "sweep": sweep,
        "lab_default": default, "table": table, "paired": paired,
        "attack_retrain": interval([r["attack_retrain"] for r in refs.values()]),
        "attack_original": interval([r["attack_original"] for r in refs.values()]),
        "attack_retrain_intervals": [r["attack_interval"]["retrain"] for r in refs.values() if r["attack_interval"]],
        "attack_original_intervals": [r["attack_interval"]["original"] for r in refs.values() if r["attack_interval"]],
        "attack_valid_original": interval([r["attack_valid_original"] for r in refs.values()]),
        "attack_valid_retrain": interval([r["attack_valid_retrain"] for r in refs.values()]),
        "noise": {"auc_forget_original": {f"{d}/{s}": r["auc_forget_original"] for (d, s), r in refs.items()},
                  "auc_forget_retrain": {f"{d}/{s}": r["auc_forget_retrain"] for (d, s), r in refs.items()},
                  "retrain_cost": {f"{d}/{s}": r["retrain_cost"] for (d, s), r in refs.items()},
                  # the noise floor of retrain distance (study/noise.py): each other seed's retrain scored as a
                  # run against the first seed's, in units of the first seed's gap
                  "retrain_seed_distance": {f"{d}/{s}": retrain_distance(
                      refs[(d, args.seeds[0])]["auc_forget_original"], r["auc_forget_retrain"],
                      refs[(d, args.seeds[0])]["auc_forget_retrain"]) for (d, s), r in refs.items()
                      if s != args.seeds[0] and (d, args.seeds[0]) in refs}},
        "seconds": time.perf_counter() - start,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, default=str))

    print(f"\n{args.request}, {len(pairs)} (draw, training seed) pairs; mean [95% bootstrap interval over pairs]")
    print(f"matched attack (training period): retrain {fmt(out['attack_retrain'])}, original "
          f"{fmt(out['attack_original'])}; validation period: retrain {fmt(out['attack_valid_retrain'])}, "
          f"original {fmt(out['attack_valid_original'])}")
    print("\n| arm | lr (rule) | retrain distance | gap closed (signed) | utility cost | matched attack | "
          "attack (valid) | unseen AUC - retrain's |")
    print("|---|---|---|---|---|---|---|---|")
    for arm in arms:
        t = table[arm]
        print(f"| {arm} | {chosen[arm]['lr']:g} | {fmt(t['retrain_distance'], 2)} | {fmt(t['gap_closed'], 2)} | "
              f"{fmt(t['utility_cost'], 4)} | {fmt(t['attack'])} | {fmt(t['attack_valid'])} | "
              f"{fmt(t['unseen_minus_retrain'], 4)} |")
    print(f"| retrain (gold) | - | 0 | 1 | {fmt(interval([r['retrain_cost'] for r in refs.values()]), 4)} | "
          f"{fmt(out['attack_retrain'])} | {fmt(out['attack_valid_retrain'])} | 0 |")
    print("| original (do nothing) | - | 1 | 0 | 0 | " f"{fmt(out['attack_original'])} | "
          f"{fmt(out['attack_valid_original'])} | {fmt(interval([r['unseen_gap'] for r in refs.values()]), 4)} |")
    floor = out["noise"]["retrain_seed_distance"]
    print("noise floor (a retrain with another seed, as a run): " + ", ".join(f"draw/seed {k} {v:.3f}"
                                                                             for k, v in floor.items()))
    for name, diff in paired.items():
        print(f"{name}: distance {fmt(diff['retrain_distance'], 3)}, cost {fmt(diff['utility_cost'], 4)}, attack "
              f"{fmt(diff['attack'], 3)}")
    print("\nlab default CURE (lr {:g}) and the old default per training seed:".format(UnlearnConfig.lr))
    for r in default:
        print(f"  {r['arm']} seed {r['seed']}: distance {r['retrain_distance']:.2f}, gap closed {r['gap_closed']:.2f}, cost "
              f"{r['utility_cost']:.4f} (retrain's own {r['retrain_cost']:.4f}; target <= +0.003), attack "
              f"{r['attack']:.3f}")
    print(f"\nsweep (first pair): " + "; ".join(f"{r['arm']}@{r['lr']:g}: valid attack {r['attack_valid']:.3f} "
                                               f"(low {r['attack_valid_low']:.3f}), distance "
                                               f"{r['retrain_distance']:.2f}" for r in sweep))
    print(f"wrote {OUT} in {out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
