"""Issue 23's targets: a forget circuit that reproduces, scored on the whole request.

On the default model (MovieLens-100K, GPT-2 4x4 from scratch), default circuit settings
(roles and item rows on every forget sample and as many retain samples, heads and MLPs on
256 prompts per side by EAP-IG, PPR counterfactuals, targets replaced on genre requests)
and the default group rule (user-level bootstrap, 1,000 resamples, tau 2, floor 0.5,
Benjamini-Hochberg at 0.05, item rows in >= 5 users' prompts on a side):

1. users:0.1 and genre:Horror, full discovery: groups by kind, the forget group in words,
   Jaccard over 3 prompt seeds and over 3 retain samples, and attribution vs exact patching
   on sampled rows and roles per side;
2. the null request of each (forget prompts drawn from the retained population): its
   forget-specific count next to the real request's;
3. genre:Horror: how many of the 20 most forget-specific rows are horror films, how many
   horror films are forget-specific (and which targets);
4. genre:Horror at neuron granularity: any forget-specific neuron?
5. lean (groups-only) discovery of users:0.1, cold, against a retrain's wall time measured in
   the same run on a fresh cache.

Prints a table and writes benchmarks/results/nodes.json. Run it alone (2 cores).

    .venv/bin/python benchmarks/bench_nodes.py [--skip-neurons]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from analysis.circuits.describe import describe
from analysis.circuits.discover import CircuitSettings, discover_circuits
from analysis.circuits.groups import Group, GroupThresholds
from analysis.circuits.lean import discover_groups
from analysis.model.recommender import load_recommender
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.workspace import Workspace, open_workspace

OUT = Path(__file__).parent / "results" / "nodes.json"
REQUESTS = ("users:0.1", "genre:Horror")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def forget_summary(groups) -> dict:
    return next(s.as_dict() for s in describe(groups) if s.group == Group.FORGET.value)


def genre_films(ws: Workspace, genre: str) -> set[str]:
    items = ws.data.items
    return {f"row:{i}" for i in items.loc[items["genres"].map(lambda gs: genre in gs), "item_id"]}


def _json(nodes) -> list[dict]:
    return [v.to_json() for v in nodes]


def request_report(ws, rec, spec: str, settings: CircuitSettings, bars) -> dict:
    forget = ws.forget_set(spec)
    result, seconds = timed(lambda: discover_circuits(ws, rec, forget, settings, progress=bars))
    j = result.to_json()
    ng = result.node_groups
    null, null_seconds = timed(lambda: discover_groups(ws, rec, forget, replace(settings, null=True), progress=bars))
    n = null.node_groups
    by_draw = j["stability"].get("by_draw", {})
    out = {"groups_by_kind": j["groups_by_kind"], "tested": j["tested"], "summary": j["summary"],
           "top_forget_specific": _json(ng.top(Group.FORGET, 20)), "top_retain_specific": _json(ng.top(Group.RETAIN, 10)),
           "stability": {k: {"jaccard": v["jaccard"], "sizes": v["sizes"], "seeds": v["seeds"]} for k, v in by_draw.items()},
           "agreement": j["agreement"]["by_side"], "seconds": seconds, "targets_scored": j["targets_scored"],
           "null": {"groups_by_kind": n.sizes_by_kind(), "tested": n.decisions().tested,
                    "top_forget_specific": _json(n.top(Group.FORGET, 10)), "summary": forget_summary(n),
                    "seconds": null_seconds}}
    if spec.startswith("genre:"):
        films = genre_films(ws, spec.split(":", 1)[1])
        top = [v["name"] for v in out["top_forget_specific"]]
        forget_rows = {v.name for v in ng.top(Group.FORGET, 10_000)}
        targets = set(f"row:{i}" for i in forget.forget_samples["item_id"])
        out["genre"] = {"top20_in_genre": sum(1 for n in top if n in films), "top20": len(top),
                        "forget_specific_rows": len(forget_rows), "of_them_in_genre": len(forget_rows & films),
                        "genre_films": len(films), "targets_forget_specific": len(forget_rows & targets),
                        "targets": len(targets)}
    return out


def neurons_report(ws, rec, settings: CircuitSettings, bars) -> dict:
    forget = ws.forget_set("genre:Horror")
    groups, seconds = timed(lambda: discover_groups(ws, rec, forget, replace(settings, granularity="neurons"),
                                                    progress=bars))
    ng = groups.node_groups
    spec = ng.specificity()
    neurons = [i for i, k in enumerate(ng.kinds) if k == "neuron"]
    leaning = sorted(neurons, key=lambda i: -spec.estimate[i])[:5]
    return {"groups": ng.sizes_by_kind().get("neuron"), "seconds": seconds,
            "forget_specific": _json(ng.node_view(i) for i in neurons if ng.labels[ng.names[i]] is Group.FORGET),
            "most_forget_leaning": _json(ng.node_view(i) for i in leaning)}


def timing_report(ws, rec, settings: CircuitSettings) -> dict:
    """Lean discovery cold vs a retrain, in this run, on a fresh cache holding only the original model."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    try:
        fresh = Workspace(ws.data, ws.interactions, ws.config, tmp)
        shutil.copytree(rec.path, tmp / "models" / rec.path.name)
        original = load_recommender(tmp / "models" / rec.path.name, ws.data)
        forget = fresh.forget_set("users:0.1", seed=0)
        lean, lean_seconds = timed(lambda: discover_groups(fresh, original, forget, settings))
        _, retrain_seconds = timed(lambda: train_recommender(fresh, forget))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"lean_discovery_cold_seconds": lean_seconds, "retrain_seconds": retrain_seconds,
            "lean_over_retrain": lean_seconds / retrain_seconds, "lean_stage_seconds": lean.seconds}


def _jaccard(r: dict, kind: str) -> str:
    s = r["stability"].get(kind)
    if s is None:
        return "n/a"
    j = s["jaccard"]["forget-specific"]
    sizes = "/".join(map(str, s["sizes"]["forget-specific"]))
    return f"{'empty on every draw' if j is None else f'{j:.2f}'} (sizes {sizes})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-neurons", action="store_true")
    parser.add_argument("--requests", default=",".join(REQUESTS),
                        help="comma-separated deletion requests (the genre rows need genre:Horror)")
    parser.add_argument("--skip-timing", action="store_true", help="leave out the cold lean discovery vs retrain")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON goes")
    args = parser.parse_args()
    requests = tuple(args.requests.split(","))
    bars = StderrBars()
    ws = open_workspace(progress=bars)
    rec = train_recommender(ws, progress=bars)
    settings = CircuitSettings()
    out: dict = {"settings": settings.key(), "model_dir": str(rec.path), "alone": True}
    for spec in requests:
        out[spec] = request_report(ws, rec, spec, settings, bars)
    if not args.skip_neurons:
        out["genre:Horror neurons"] = neurons_report(ws, rec, settings, bars)
    if not args.skip_timing:
        out["timing"] = timing_report(ws, rec, settings)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))

    print("\n| target | measured | met |\n|---|---|---|")
    for spec in requests:
        r = out[spec]
        for kind in ("prompt seed", "retain sample"):
            s = r["stability"].get(kind, {}).get("jaccard", {}).get("forget-specific")
            print(f"| {spec}: forget-specific Jaccard over 3 {kind}s >= 0.8 | {_jaccard(r, kind)} | "
                  f"{'empty (stated)' if s is None else s >= 0.8} |")
        real = sum(v["forget-specific"] for v in r["groups_by_kind"].values())
        null = sum(v["forget-specific"] for v in r["null"]["groups_by_kind"].values())
        null_r = sum(v["retain-specific"] for v in r["null"]["groups_by_kind"].values())
        print(f"| {spec}: the null has 0 forget-specific nodes (BH at {GroupThresholds().fdr}, {r['null']['tested']} "
              f"tests) | null {null} forget- / {null_r} retain-specific vs real {real} | {null == 0} |")
        for side in ("forget", "retain"):
            rho = r["agreement"].get(f"item_rows_{side}")
            print(f"| {spec}: input scores vs exact patching, sampled rows, {side}: Spearman >= 0.9 | "
                  f"{'n/a' if rho is None else f'{rho:.3f}'} | {rho is not None and rho >= 0.9} |")
    g = out.get("genre:Horror", {}).get("genre")
    if g:
        print(f"| genre:Horror: the 20 most forget-specific rows are horror films | {g['top20_in_genre']} of {g['top20']} | "
              f"{g['top20_in_genre'] == g['top20'] == 20} |")
        print(f"| genre:Horror: horror targets among the forget-specific rows | {g['targets_forget_specific']} of "
              f"{g['targets']} targets; {g['of_them_in_genre']} of {g['forget_specific_rows']} forget-specific rows are "
              f"horror ({g['genre_films']} horror films) | {g['targets_forget_specific'] > 0} |")
    if "genre:Horror neurons" in out:
        nr = out["genre:Horror neurons"]
        print(f"| genre:Horror neurons: any forget-specific | {len(nr['forget_specific'])} ({nr['groups']}) | - |")
    t = out.get("timing")
    if t:
        print(f"| lean discovery cold <= 1/5 of a retrain | {t['lean_discovery_cold_seconds']:.1f} s vs retrain "
              f"{t['retrain_seconds']:.1f} s = {t['lean_over_retrain']:.2f} | {t['lean_over_retrain'] <= 0.2} |")
    for spec in requests:
        r = out[spec]
        print(f"\n{spec} ({r['seconds']:.0f} s full discovery, null {r['null']['seconds']:.0f} s):")
        for s in r["summary"]:
            print("  " + s["sentence"])
        print("  null: " + r["null"]["summary"]["sentence"])
        for n in r["top_forget_specific"][:20]:
            s = n["specificity"]
            print(f"    {n['label'][:44]:<44} {s['estimate']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}] q {s['q_forget']:.2g} "
                  f"users {n['presence']['forget']}/{n['presence']['retain']} {s['basis']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
