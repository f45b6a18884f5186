"""How much of the forget gradient CURE's rules keep, and where that gradient lives.

On the default model and request (users:0.1, draw 0), over seeded forget/retain batches
of the unlearning loop: the share of ||g_forget||^2 in each circuit group's modules and
in unowned parameters (embeddings, layer norms), and ||CURE's forget part|| / ||g_forget||
overall and per task-shared module. Explains a CURE run that barely moves. Prints a table
and writes benchmarks/results/cure_update.json.

    .venv/bin/python benchmarks/bench_cure_update.py [--batches 10]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from analysis.circuits.discover import discover_circuits
from analysis.circuits.groups import Group
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.unlearn.conflict import gradients
from analysis.unlearn.methods import RetainSpecific, circuit_rules
from analysis.unlearn.modules import flat, module_map
from analysis.unlearn.objectives import bce, ga_loss, prompt_scores
from analysis.unlearn.run import Batches, UnlearnConfig
from analysis.workspace import open_workspace

OUT = Path(__file__).parent / "results" / "cure_update.json"
SPEC = "users:0.1"


def sq(t: torch.Tensor) -> float:
    return float((t.double() ** 2).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    bars = StderrBars()
    ws = open_workspace(progress=bars)
    rec = train_recommender(ws, progress=bars)
    forget = ws.forget_set(SPEC, seed=0)
    cfg = UnlearnConfig()
    groups = discover_circuits(ws, rec, forget, cfg.circuits, cfg.thresholds, bars).labels
    model = rec.model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    mapping = module_map(model)
    batches = Batches(ws, rec, forget, cfg.batch_size, cfg.seed)
    score = lambda p: prompt_scores(model, p, rec.pad_id, rec.fmt.yes_id, rec.fmt.no_id)  # noqa: E731

    shares: dict[str, list[float]] = {}
    kept_total: list[float] = []
    kept_module: dict[str, list[float]] = {}
    cos_module: dict[str, list[float]] = {}
    for _ in range(args.batches):
        fp, fl = batches.draw("forget")
        rp, rl = batches.draw("retain")
        g_f = gradients(model, ga_loss(score(fp), fl))  # the forget objective of GA/graddiff/CURE (-BCE)
        g_r = gradients(model, bce(score(rp), rl))
        total = sum(sq(t) for t in g_f.values())
        owned = {g.value: 0.0 for g in Group}
        for m, slices in mapping.items():
            owned[groups[m].value] += sq(flat(g_f, slices))
        for name, value in {**owned, "unowned (embeddings, norms)": total - sum(owned.values())}.items():
            shares.setdefault(name, []).append(value / total)
        step = circuit_rules(g_f, g_r, cfg.retain_weight, mapping, groups, RetainSpecific.FREEZE)
        kept_total.append((sum(sq(t) for t in step.forget_part.values()) / total) ** 0.5)
        for m, slices in mapping.items():
            if groups[m] is Group.SHARED:
                f, r = flat(g_f, slices), flat(g_r, slices)
                kept_module.setdefault(m, []).append(float(flat(step.forget_part, slices).norm() / f.norm()))
                cos_module.setdefault(m, []).append(float(f @ r / (f.norm() * r.norm())))

    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    result = {"request": SPEC, "batches": args.batches, "batch_size": cfg.batch_size,
              "groups": {g.value: [m for m in mapping if groups[m] is g] for g in Group},
              "forget_gradient_share": {k: mean(v) for k, v in shares.items()},
              "cure_forget_part_norm_ratio": mean(kept_total),
              "task_shared": {m: {"kept_norm_ratio": mean(kept_module[m]), "cos_forget_retain": mean(cos_module[m])}
                              for m in kept_module}}
    print(f"{SPEC}, {args.batches} batches of {cfg.batch_size}: ||CURE forget part|| / ||g_forget|| = "
          f"{result['cure_forget_part_norm_ratio']:.4f}")
    print("\nshare of ||g_forget||^2")
    for k, v in result["forget_gradient_share"].items():
        print(f"  {k:<28} {v:.4f}")
    print("\ntask-shared module | kept ||f|| ratio | cos(g_forget, g_retain)")
    for m, v in result["task_shared"].items():
        print(f"  {m:<8} {v['kept_norm_ratio']:.4f}  {v['cos_forget_retain']:+.4f}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
