"""How much of the forget gradient CURE's rules keep, and where that gradient lives.

On the default model (users:0.1 and genre:Horror, draw 0), over seeded forget/retain
batches of the unlearning loop: the share of ||g_forget||^2 owned by some node (target
>= 99%), its split by the group whose rule each parameter block follows and by node kind,
and ||CURE's forget part|| / ||g_forget|| overall and per task-shared graph node. Prints
a table and writes benchmarks/results/cure_update.json.

    .venv/bin/python benchmarks/bench_cure_update.py [--batches 10] [--requests users:0.1,genre:Horror]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from analysis.circuits.lean import discover_groups
from analysis.circuits.groups import Group, block_group
from analysis.circuits.ownership import recommender_table
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.unlearn.conflict import gradients
from analysis.unlearn.methods import RetainSpecific, circuit_rules
from analysis.unlearn.modules import flat
from analysis.model.objectives import bce, ga_loss, prompt_scores
from analysis.unlearn.run import UnlearnConfig
from analysis.unlearn.start import Batches
from analysis.workspace import open_workspace

OUT = Path(__file__).parent / "results" / "cure_update.json"


def sq(t: torch.Tensor) -> float:
    return float((t.double() ** 2).sum())


def measure(ws, rec, spec: str, n_batches: int, bars) -> dict:
    forget = ws.forget_set(spec, seed=0)
    cfg = UnlearnConfig()
    groups = discover_groups(ws, rec, forget, cfg.circuits, cfg.thresholds, bars).labels
    model = rec.model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    table = recommender_table(rec)
    batches = Batches(ws, rec, forget, cfg.batch_size, cfg.seed)
    score = lambda p: prompt_scores(model, p, rec.pad_id, rec.fmt.yes_id, rec.fmt.no_id)  # noqa: E731
    kind_of = {n.name: n.kind.value for n in table.nodes}

    owned, by_group, by_kind, kept_total = [], {}, {}, []
    kept_node: dict[str, list[float]] = {}
    cos_node: dict[str, list[float]] = {}
    for _ in range(n_batches):
        fp, fl = batches.draw("forget")
        rp, rl = batches.draw("retain")
        g_f = gradients(model, ga_loss(score(fp), fl))  # the forget objective of GA/graddiff/CURE (-BCE)
        g_r = gradients(model, bce(score(rp), rl))
        total = sum(sq(t) for t in g_f.values())
        share_owned, groups_here, kinds_here = 0.0, {g.value: 0.0 for g in Group}, {}
        for block in table.blocks:
            v = sq(flat(g_f, block.slices)) / total
            share_owned += v
            groups_here[block_group(block.owners, groups).value] += v
            kind = kind_of[block.owners[0]] if len(block.owners) == 1 else "shared by several nodes"
            kinds_here[kind] = kinds_here.get(kind, 0.0) + v
        owned.append(share_owned)
        for k, v in groups_here.items():
            by_group.setdefault(k, []).append(v)
        for k, v in kinds_here.items():
            by_kind.setdefault(k, []).append(v)
        step = circuit_rules(g_f, g_r, cfg.retain_weight, table, groups, RetainSpecific.FREEZE)
        kept_total.append((sum(sq(t) for t in step.forget_part.values()) / total) ** 0.5)
        for m in table.scored:
            if groups.get(m) is Group.SHARED and table.exclusive(m) and table[m].kind.value != "item-row":
                f, r = flat(g_f, table.exclusive(m)), flat(g_r, table.exclusive(m))
                if f.norm() > 0 and r.norm() > 0:
                    kept_node.setdefault(m, []).append(float(flat(step.forget_part, table.exclusive(m)).norm() / f.norm()))
                    cos_node.setdefault(m, []).append(float(f @ r / (f.norm() * r.norm())))
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    sizes = {g.value: sum(1 for x in groups.values() if x is g) for g in Group}
    return {"request": spec, "batches": n_batches, "batch_size": cfg.batch_size, "group_sizes": sizes,
            "owned_share": mean(owned), "forget_gradient_share_by_group": {k: mean(v) for k, v in by_group.items()},
            "forget_gradient_share_by_kind": {k: mean(v) for k, v in by_kind.items()},
            "cure_forget_part_norm_ratio": mean(kept_total),
            "task_shared": {m: {"kept_norm_ratio": mean(kept_node[m]), "cos_forget_retain": mean(cos_node[m])}
                            for m in kept_node}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--requests", default="users:0.1,genre:Horror")
    args = parser.parse_args()
    bars = StderrBars()
    ws = open_workspace(progress=bars)
    rec = train_recommender(ws, progress=bars)
    results = [measure(ws, rec, spec, args.batches, bars) for spec in args.requests.split(",")]
    for r in results:
        print(f"\n{r['request']}, {r['batches']} batches of {r['batch_size']}: owned share of ||g_forget||^2 = "
              f"{r['owned_share']:.4f} (target >= 0.99); ||CURE forget part|| / ||g_forget|| = "
              f"{r['cure_forget_part_norm_ratio']:.4f}; groups {r['group_sizes']}")
        print("  share of ||g_forget||^2 by the group whose rule moves it")
        for k, v in r["forget_gradient_share_by_group"].items():
            print(f"    {k:<28} {v:.4f}")
        print("  ... by node kind")
        for k, v in sorted(r["forget_gradient_share_by_kind"].items(), key=lambda kv: -kv[1]):
            print(f"    {k:<28} {v:.4f}")
        if r["task_shared"]:
            print("  task-shared graph node | kept ||f|| ratio | cos(g_forget, g_retain)")
            for m, v in r["task_shared"].items():
                print(f"    {m:<12} {v['kept_norm_ratio']:.4f}  {v['cos_forget_retain']:+.4f}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"requests": results}, indent=1))
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
