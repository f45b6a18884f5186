"""Issue 11's targets: where the forget circuit lives, by node kind, with intervals.

On the default model (MovieLens-100K, GPT-2 4x4 from scratch), default circuit settings
(EAP-IG, 256 prompts per side, PPR counterfactuals) and the default group rule
(specificity, tau 2, floor 0.5, 1,000 bootstrap resamples):

1. genre:Horror, full discovery with 3 prompt seeds: group sizes by kind, the top 10
   forget-specific nodes (item rows by title), Jaccard over seeds for non-empty groups;
2. users:0.1 on 3 deletion draws: group sizes (lean discovery; draw 0 full), and, when
   nothing is forget-specific, the intervals of the most forget-leaning nodes;
3. EAP-IG vs exact patching on embedding roles and a 100-row sample of item rows
   (Spearman, pooled over forget and retain prompts), from the full discoveries;
4. lean (groups-only) discovery of users:0.1 draw 0, cold, against a retrain's wall time
   measured in the same run on a fresh cache.

Prints a table and writes benchmarks/results/nodes.json. Run it alone (2 cores).

    .venv/bin/python benchmarks/bench_nodes.py
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from analysis.circuits.discover import CircuitSettings, discover_circuits
from analysis.circuits.lean import discover_groups
from analysis.circuits.groups import Group
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.workspace import Workspace, open_workspace

OUT = Path(__file__).parent / "results" / "nodes.json"


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def forget_leaning(groups, n: int = 5) -> list[dict]:
    """The nodes with the highest specificity estimate among those above the floor on forget prompts."""
    spec = groups.specificity()
    floors = groups.floor_shares()
    idx = [i for i in range(len(groups.names)) if spec.forget_importance[i] >= floors[groups.kinds[i]]]
    idx.sort(key=lambda i: -spec.estimate[i])
    return [groups.node_view(i) for i in idx[:n]]


def main() -> None:
    bars = StderrBars()
    ws = open_workspace(progress=bars)
    rec = train_recommender(ws, progress=bars)
    settings = CircuitSettings()
    out: dict = {"settings": settings.key(), "model_dir": str(rec.path)}

    horror, horror_seconds = timed(lambda: discover_circuits(ws, rec, ws.forget_set("genre:Horror"), settings,
                                                             progress=bars))
    hj = horror.to_json()
    out["genre:Horror"] = {"groups": hj["groups"], "groups_by_kind": hj["groups_by_kind"],
                           "top_forget_specific": hj["top_forget_specific"], "stability": hj["stability"],
                           "agreement": hj["agreement"]["by_side"], "seconds": horror_seconds,
                           "coverage": {k: v for k, v in hj["coverage"].items() if k != "blocks"}}

    draws = []
    for draw in (0, 1, 2):
        forget = ws.forget_set("users:0.1", seed=draw)
        if draw == 0:
            full = discover_circuits(ws, rec, forget, settings, progress=bars)
            uj = full.to_json()
            out["users:0.1 draw 0 (full)"] = {"stability": uj["stability"], "agreement": uj["agreement"]["by_side"],
                                              "coverage": {k: v for k, v in uj["coverage"].items() if k != "blocks"}}
            groups = full.node_groups
        else:
            groups = discover_groups(ws, rec, forget, settings, progress=bars).node_groups
        draws.append({"draw": draw, "groups": groups.sizes(), "groups_by_kind": groups.sizes_by_kind(),
                      "top_forget_specific": groups.top(Group.FORGET, 10), "most_forget_leaning": forget_leaning(groups)})
    out["users:0.1"] = draws

    # lean discovery cold vs a retrain, in this run, on a fresh cache holding only the original model
    tmp = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    try:
        fresh = Workspace(ws.data, ws.interactions, ws.config, tmp)
        shutil.copytree(rec.path, tmp / "models" / rec.path.name)
        from analysis.model.recommender import load_recommender

        original = load_recommender(tmp / "models" / rec.path.name, ws.data)
        forget = fresh.forget_set("users:0.1", seed=0)
        lean, lean_seconds = timed(lambda: discover_groups(fresh, original, forget, settings))
        _, full_seconds = timed(lambda: discover_circuits(fresh, original, forget, settings))
        _, retrain_seconds = timed(lambda: train_recommender(fresh, forget))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["timing"] = {"lean_discovery_cold_seconds": lean_seconds, "full_discovery_cold_seconds": full_seconds,
                     "retrain_seconds": retrain_seconds, "lean_over_retrain": lean_seconds / retrain_seconds}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, default=str))

    h = out["genre:Horror"]
    jac = h["stability"]["jaccard"] or {}
    non_empty = {g: v for g, v in jac.items() if v is not None}
    print("\n| target | measured | met |\n|---|---|---|")
    cov = [out["genre:Horror"]["coverage"]["forget_grad_share"], out["users:0.1 draw 0 (full)"]["coverage"]["forget_grad_share"]]
    print(f"| forget gradient owned by some node >= 99% | Horror {cov[0]:.2%}, users:0.1 {cov[1]:.2%} | "
          f"{min(cov) >= 0.99} |")
    print(f"| genre:Horror: >= 1 forget-specific node, CI above tau | {h['groups']['forget-specific']} "
          f"({h['groups_by_kind']}) | {h['groups']['forget-specific'] >= 1} |")
    print(f"| genre:Horror: Jaccard >= 0.7 over 3 prompt seeds (non-empty groups) | "
          + ", ".join(f"{g} {v:.2f}" for g, v in non_empty.items()) + f"; sizes {h['stability']['sizes']} | "
          f"{bool(non_empty) and non_empty.get('forget-specific', 0) >= 0.7} (forget-specific) |")
    for d in draws:
        print(f"| users:0.1 draw {d['draw']}: group sizes | {d['groups']} | - |")
    for name, key in (("roles", "roles"), ("item rows (sample)", "item_rows")):
        vals = [out[r]["agreement"].get(key) for r in ("genre:Horror", "users:0.1 draw 0 (full)")]
        n = [out[r]["agreement"].get(f"n_{key}") for r in ("genre:Horror", "users:0.1 draw 0 (full)")]
        shown = ", ".join("n/a" if v is None else f"{v:.3f}" for v in vals)
        print(f"| EAP-IG vs exact patching, {name}: Spearman >= 0.9 | {shown} (n = {n}) | "
              f"{all(v is not None and v >= 0.9 for v in vals)} |")
    t = out["timing"]
    print(f"| lean discovery cold <= 1/5 of a retrain | {t['lean_discovery_cold_seconds']:.1f} s vs retrain "
          f"{t['retrain_seconds']:.1f} s = {t['lean_over_retrain']:.2f} (full discovery "
          f"{t['full_discovery_cold_seconds']:.1f} s) | {t['lean_over_retrain'] <= 0.2} |")
    print("\ngenre:Horror top forget-specific:")
    for n in h["top_forget_specific"]:
        s = n["specificity"]
        print(f"  {n['label']:<45} {n['kind']:<10} {s['estimate']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}]")
    for d in draws:
        print(f"users:0.1 draw {d['draw']} most forget-leaning (above the floor):")
        for n in d["most_forget_leaning"]:
            s = n["specificity"]
            print(f"  {n['label']:<45} {n['group']:<16} {s['estimate']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}]")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
