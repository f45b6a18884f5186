"""Circuit targets on the default model and the default request (users:0.1).

1. agreement: EAP and EAP-IG node scores vs exact node patching (Spearman, heads and MLPs);
2. faithfulness: the smallest top-n circuit reaching recovery 0.8, and the best raw
   faithfulness / recovery within 20% of the edges;
3. speed: EAP-IG over all edges for 256 prompts, and exact edge patching of the same graph
   on the same prompts, timed in this run; the same on a wider untrained model (8 x 8),
   where exact patching is timed on an edge subset and extrapolated (said in the output);
4. stability: Jaccard of every group across 3 prompt/corruption seeds, and across 3
   forget-set draws of users:0.1;
5. corruption strength: clean vs corrupted metric for every corruption option.

Prints a table and writes benchmarks/results/circuits.json.

    .venv/bin/python benchmarks/bench_circuits.py
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from analysis.circuits.attribution import AttributionConfig, _masks_for_edges, attribute, patch_effects, patch_nodes
from analysis.circuits.corrupt import Corruption, build_prompt_set, user_item_graph
from analysis.circuits.discover import CircuitSettings, discover_circuits
from analysis.circuits.sampling import retain_samples, sample_rows
from analysis.circuits.groups import Group, group_stability
from analysis.circuits.runner import GraphRunner
from analysis.circuits.trace import load_bridge
from analysis.config import ModelConfig, TrainConfig
from analysis.model.sequences import PromptBuilder
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.workspace import open_workspace

OUT = Path(__file__).parent / "results" / "circuits.json"
SPEC = "users:0.1"


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def agreement_and_speed(runner, f_set, r_set) -> dict:
    out = {}
    exact_nodes = {side: patch_nodes(runner, s) for side, s in (("forget", f_set), ("retain", r_set))}
    for method in ("eap", "eap-ig"):
        res = {side: attribute(runner, s, AttributionConfig(method)) for side, s in (("forget", f_set), ("retain", r_set))}
        out[method] = {f"spearman_{side}": float(spearmanr(res[side].nodes[1:], exact_nodes[side][1:]).statistic)
                       for side in res}
        both = lambda d: torch.cat([d["forget"][1:], d["retain"][1:]])  # noqa: E731
        out[method]["spearman_pooled"] = float(spearmanr(both({k: v.nodes for k, v in res.items()}),
                                                         both(exact_nodes)).statistic)
        out[method]["seconds_256_prompts"] = res["retain"].seconds
    _, exact_seconds = timed(lambda: patch_effects(runner, r_set, _masks_for_edges(runner)))
    out["exact_edge_patching_seconds_256_prompts"] = exact_seconds
    out["speedup_eap_ig_vs_exact_edges"] = exact_seconds / out["eap-ig"]["seconds_256_prompts"]
    out["n_edges"] = runner.graph.n_edges
    return out


def wide_model_speed(ws, rows, subset: int = 60) -> dict:
    """An untrained 8-layer x 8-head model: how the ratio grows with the graph (edges ~ nodes^2)."""
    import tempfile

    from analysis.model.prompts import make_format
    from analysis.model.recommender import Recommender, load_recommender
    from analysis.model.train import _new_model

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model, tokenizer, kind = _new_model(ws, ModelConfig(n_layer=8, n_head=8, d_model=128, d_mlp=512),
                                            TrainConfig(), None)
        rec = Recommender(model.eval(), tokenizer, make_format(kind, tokenizer, ws.data), {"prompt_format": kind})
        rec.save(Path(tmp))
        rec = load_recommender(Path(tmp), ws.data)
        runner = GraphRunner(load_bridge(rec), rec)
        ps = build_prompt_set(PromptBuilder(rec.fmt, ws.interactions), rows, "ppr", seed=0)
        ig = attribute(runner, ps, AttributionConfig("eap-ig"))
        masks = _masks_for_edges(runner)
        pick = np.random.default_rng(0).choice(len(masks), size=subset, replace=False)
        _, sub_seconds = timed(lambda: patch_effects(runner, ps, [masks[i] for i in pick]))
    extrapolated = sub_seconds / subset * len(masks)
    return {"shape": "8 layers x 8 heads (untrained)", "n_edges": len(masks), "eap_ig_seconds": ig.seconds,
            "exact_edges_timed": subset, "exact_subset_seconds": sub_seconds,
            "exact_all_edges_seconds_extrapolated": extrapolated, "speedup_extrapolated": extrapolated / ig.seconds}


def corruption_strength(ws, rec, rows) -> dict:
    builder = PromptBuilder(rec.fmt, ws.interactions)
    graph = user_item_graph(ws.interactions)
    sign = rows["label"].to_numpy() * 2 - 1
    out = {}
    for c in Corruption:
        ps = build_prompt_set(builder, rows, c, graph, seed=0)
        clean = float(np.mean(sign * rec.score_prompts(ps.clean)))
        if ps.corrupt is None:
            runner = GraphRunner(load_bridge(rec), rec)
            corrupt = attribute(runner, ps, AttributionConfig("eap")).corrupt_metric
        else:
            corrupt = float(np.mean(sign * rec.score_prompts(ps.corrupt)))
        out[c.value] = {"clean": clean, "corrupt": corrupt, "drop_share": (clean - corrupt) / clean}
    return out


def main() -> None:
    bars = StderrBars()
    ws = open_workspace()
    rec = train_recommender(ws, None, ModelConfig(), TrainConfig(), progress=bars)
    forget = ws.forget_set(SPEC)
    settings = CircuitSettings()
    runner = GraphRunner(load_bridge(rec), rec)
    builder = PromptBuilder(rec.fmt, ws.interactions)
    graph = user_item_graph(ws.interactions)
    f_set, r_set = (build_prompt_set(builder, sample_rows(rows, settings.n_prompts, settings.seed), settings.corruption,
                                     graph, seed=s)
                    for rows, s in ((forget.forget_samples, settings.seed),
                                    (retain_samples(ws, forget), settings.seed + 10_000)))

    speed = agreement_and_speed(runner, f_set, r_set)
    result, discover_seconds = timed(lambda: discover_circuits(ws, rec, forget, settings, progress=bars))
    j = result.to_json()
    curve = j["faithfulness"]["curve"]
    within = [p for p in curve if p["share"] <= 0.2]
    faith = {"at_circuit": j["faithfulness"]["at_circuit"], "curve": curve,
             "best_faithfulness_within_20pct": max(p["faithfulness"] for p in within),
             "best_recovery_within_20pct": max(p["recovery"] for p in within),
             "empty_circuit_faithfulness": curve[0]["faithfulness"]}

    # stability across forget-set draws: each draw is another 10% of users
    labelings = [result.labels]
    for forget_seed in (1, 2):
        other = discover_circuits(ws, rec, ws.forget_set(SPEC, seed=forget_seed),
                                  CircuitSettings(stability_seeds=1), progress=bars)
        labelings.append(other.labels)
    groups = {g.value: sorted(n for n, x in result.labels.items() if x is g) for g in Group}
    stability = {"prompt_seeds": j["stability"]["jaccard"], "prompt_seed_sizes": j["stability"]["sizes"], "forget_draws": group_stability(labelings),
                 "groups": groups,
                 "note": "None = the group is empty on every seed or draw (no agreement to measure)"}

    rows = sample_rows(retain_samples(ws, forget), 256, 0)
    out = {
        "request": SPEC, "settings": settings.key(), "model_dir": str(rec.path),
        "agreement_and_speed": speed, "wide_model_speed": wide_model_speed(ws, rows),
        "faithfulness": faith, "stability": stability, "corruption_strength": corruption_strength(ws, rec, rows),
        "discover_seconds": discover_seconds, "discover_breakdown": j["seconds"],
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()},
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))

    s, w = speed, out["wide_model_speed"]
    print(f"\n| target | measured | target met |\n|---|---|---|")
    print(f"| EAP-IG node Spearman vs exact node patching >= 0.9 | {s['eap-ig']['spearman_pooled']:.3f} "
          f"(forget {s['eap-ig']['spearman_forget']:.3f}, retain {s['eap-ig']['spearman_retain']:.3f}) | "
          f"{s['eap-ig']['spearman_pooled'] >= 0.9} |")
    print(f"| EAP node Spearman (report) | {s['eap']['spearman_pooled']:.3f} | - |")
    at = faith["at_circuit"]
    print(f"| <=20% of edges keeps >=80% of the logit difference | faithfulness {faith['best_faithfulness_within_20pct']:.3f}"
          f" (recovery {faith['best_recovery_within_20pct']:.3f}); smallest circuit at recovery 0.8: {at['n_edges']} "
          f"edges = {at['share']:.1%} (faithfulness {at['faithfulness']:.3f}) | "
          f"{faith['best_faithfulness_within_20pct'] >= 0.8} |")
    print(f"| EAP-IG 256 prompts <= 30 s | {s['eap-ig']['seconds_256_prompts']:.1f} s | "
          f"{s['eap-ig']['seconds_256_prompts'] <= 30} |")
    print(f"| >= 50x faster than exact edge patching ({s['n_edges']} edges) | {s['speedup_eap_ig_vs_exact_edges']:.1f}x "
          f"({s['exact_edge_patching_seconds_256_prompts']:.1f} s) | {s['speedup_eap_ig_vs_exact_edges'] >= 50} |")
    print(f"| same, 8x8 untrained model ({w['n_edges']} edges, extrapolated from {w['exact_edges_timed']}) | "
          f"{w['speedup_extrapolated']:.0f}x | {w['speedup_extrapolated'] >= 50} |")
    for name, jac in (("prompt seeds", stability["prompt_seeds"]), ("forget-set draws", stability["forget_draws"])):
        met = [v for v in jac.values() if v is not None]
        print(f"| Jaccard >= 0.7 over 3 {name} | " + ", ".join(f"{g} " + ("empty" if v is None else f"{v:.2f}")
                                                               for g, v in jac.items())
              + f" | {bool(met) and min(met) >= 0.7} (non-empty groups) |")
    print("\ngroups:", {g: len(m) for g, m in groups.items()})
    print("corruption (clean -> corrupted metric):",
          {k: f"{v['clean']:.3f}->{v['corrupt']:.3f}" for k, v in out["corruption_strength"].items()})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
