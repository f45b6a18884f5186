"""Where the seconds go (issue 26): the model's own floor, one unlearning step by stage, a lab run,
training, and circuit discovery on a GPT-2-Large-shaped model. Run it alone: two torch jobs on 2
cores slow each other 5x or more.

    .venv/bin/python benchmarks/bench_speed.py [--parts floor,step,lab,train,readout,large] [--steps 30] [--label after]

* floor: one batch of 64 forget prompts through the default model: forward without gradients,
  forward with, forward + backward; and the per-sample cost at 64, 128 and 256 prompts (does a
  bigger batch, the thing that stacking several runs into one pass buys, make a sample cheaper?).
* step: NPO and CURE on users:0.1, `--steps` steps each, seconds per step by stage (the run's own
  StageClock). CURE's groups here are drawn at random per node with a fixed seed: a step's cost does
  not depend on which nodes are in which group, and real groups need minutes of discovery first.
* lab: an NPO lab run on users:0.1 at the lab's defaults (one epoch), wall time split into the
  retrain (when not cached), the steps, and the rest (evaluation against retrain and original,
  cache I/O).
* train: the default recipe in a scratch cache (data read from ./cache): seconds of the training loop
  (validation each epoch included) and of the final evaluation, test AUC.
* readout: the graph runner's clean, patched and input-gradient passes on 8 title prompts of the
  GPT-2-Large-shaped model below, metric from every logit against the Yes - No readout.
* large: discovery (EAP-IG, exact patching of every node or `--patch-check N`, faithfulness curve) on a
  randomly initialised GPT-2-Large-shaped title recommender cut to 2 layers (20 heads, d 1280, vocabulary
  50,257), 8 prompts per side, the role and item-row scores on 256 prompts per side (`request_samples`;
  the whole request had not finished its first side after 17 min), by stage.

Prints a table and writes benchmarks/results/speed-<label>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.cache import cache_root  # noqa: E402
from analysis.circuits.discover import CircuitSettings, discover_circuits  # noqa: E402
from analysis.circuits.groups import Group  # noqa: E402
from analysis.config import ModelConfig, TrainConfig  # noqa: E402
from analysis.model.evaluate import ModelEvaluation  # noqa: E402
from analysis.model.train import train_recommender  # noqa: E402
from analysis.unlearn.lab import retrain_cached, unlearn  # noqa: E402
from analysis.unlearn.modules import recommender_table  # noqa: E402
from analysis.model.objectives import prompt_scores  # noqa: E402
from analysis.unlearn.run import UnlearnConfig, unlearn_steps  # noqa: E402
from analysis.unlearn.start import Batches  # noqa: E402
from analysis.workspace import open_workspace  # noqa: E402
from benchmarks.bench_gpu import REDUCED, Stages, _title_backbone, title_recommender  # noqa: E402

REQUEST = "users:0.1"
OUT = Path(__file__).parent / "results"


def _show(rows: list[dict], row: dict) -> None:
    rows.append(row)
    print(json.dumps(row, default=str), flush=True)


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocator and thread pool
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def floor(ws, rec, rows: list[dict]) -> None:
    forget = ws.forget_set(REQUEST)
    batches = Batches(ws, rec, forget, 256, 0)
    prompts, _ = batches.draw("forget", 256)
    model = rec.model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    params = list(model.parameters())
    score = lambda ps: prompt_scores(model, ps, rec.pad_id, rec.fmt.yes_id, rec.fmt.no_id)  # noqa: E731

    def backward(ps):
        torch.autograd.grad(score(ps).sum(), params, allow_unused=True)

    with torch.no_grad():
        no_grad = _timed(lambda: score(prompts[:64]), 10)
    _show(rows, {"part": "floor", "what": "forward, no gradient, 64 prompts", "seconds": no_grad,
                 "tokens_per_prompt": len(prompts[0])})
    _show(rows, {"part": "floor", "what": "forward with gradient, 64 prompts", "seconds": _timed(lambda: score(prompts[:64]), 10)})
    for n in (64, 128, 256):
        s = _timed(lambda n=n: backward(prompts[:n]), 5)
        _show(rows, {"part": "floor", "what": f"forward + backward, {n} prompts", "seconds": s, "ms_per_prompt": 1e3 * s / n})


def step(ws, rec, rows: list[dict], n_steps: int) -> None:
    forget = ws.forget_set(REQUEST)
    table = recommender_table(rec)
    rng = random.Random(0)
    groups = {n: rng.choice(list(Group)) for n in table.owners}
    for method in ("npo", "cure"):
        cfg = UnlearnConfig(method=method, steps=n_steps)
        out = unlearn_steps(ws, rec, forget, cfg, groups if method == "cure" else None)
        clock = out.stage_seconds or {}
        split = {k: v / n_steps for k, v in clock.items() if k != "conflict before/after"}
        _show(rows, {"part": "step", "what": f"{method} step, batch 64 (+ 64 retain)", "seconds": out.seconds / n_steps,
                     "by_stage": split, "per_run": {"conflict before/after": clock.get("conflict before/after")}})


def lab(ws, rec, rows: list[dict]) -> None:
    forget = ws.forget_set(REQUEST)
    had_retrain = retrain_cached(ws, rec, forget)
    start = time.perf_counter()
    run = unlearn(ws, rec, forget, UnlearnConfig(method="npo"))
    wall = time.perf_counter() - start
    retrain = 0.0 if had_retrain else run.retrain_seconds
    _show(rows, {"part": "lab", "what": f"npo lab run, {REQUEST}, {run.steps_run} steps", "seconds": wall,
                 "by_stage": {"retrain (not cached)": retrain, "steps": run.seconds,
                              "evaluation and cache I/O": wall - retrain - run.seconds},
                 "retrain_was_cached": had_retrain, "stage_seconds": run.stage_seconds})


def train(ws, rows: list[dict], scratch: Path) -> None:
    fresh = replace(ws, root=scratch / "train")
    start = time.perf_counter()
    rec = train_recommender(fresh, None, ModelConfig(), TrainConfig())
    wall = time.perf_counter() - start
    loop = rec.meta["training"]["train_seconds"]
    _show(rows, {"part": "train", "what": "default recipe, 3 epochs", "seconds": wall,
                 "by_stage": {"training loop (validation per epoch included)": loop, "evaluation and I/O": wall - loop},
                 "steps": rec.meta["training"]["steps"], "test_auc": ModelEvaluation.of(rec).test.auc})


REQUEST_SAMPLES = 256


def _large_rec(ws, scratch: Path):
    return title_recommender(ws, _title_backbone(scratch / "backbone", ws.data.items["title"], REDUCED))


def readout(ws, rows: list[dict], scratch: Path) -> None:
    """The graph runner's three passes on 8 title prompts of the GPT-2-Large-shaped model, with the metric read
    from every logit (what ran before) and through the Yes - No readout (stopping before the unembedding)."""
    from analysis.circuits.corrupt import build_prompt_set
    from analysis.circuits.runner import GraphRunner
    from analysis.circuits.trace import load_bridge
    from analysis.model.sequences import PromptBuilder, pad_batch

    rec = _large_rec(ws, scratch)
    runner = GraphRunner(load_bridge(rec), rec)
    sample = ws.interactions.split("train").sample(8, random_state=0)
    ps = build_prompt_set(PromptBuilder(rec.fmt, ws.interactions), sample, "ppr", seed=0)
    tokens = torch.as_tensor(pad_batch(ps.clean, runner.pad_id))
    last = torch.tensor([len(p) - 1 for p in ps.clean])
    sign = torch.as_tensor(ps.labels * 2 - 1, dtype=torch.float32)
    corrupt = runner.outputs(torch.as_tensor(pad_batch(ps.corrupt, runner.pad_id, tokens.shape[1])))
    one = torch.zeros_like(runner.graph.allowed)
    one[5] = True
    passes = {"clean metric": lambda: runner.clean_metric(tokens, last, sign),
              "patched metric, one node": lambda: runner.patched_metric(tokens, last, sign, corrupt, one),
              "input gradients (EAP-IG's pass)": lambda: runner.input_grads(tokens, last, sign)}
    for name, fn in passes.items():
        seconds = {}
        for full in (True, False):
            runner.full_logits = full
            seconds["full logits" if full else "readout"] = _timed(fn, 2)
        runner.full_logits = False
        _show(rows, {"part": "readout", "what": f"{name}, 8 prompts x {tokens.shape[1]} tokens", "seconds": seconds["readout"],
                     "by_stage": seconds, "speedup": seconds["full logits"] / seconds["readout"]})


def large(ws, rows: list[dict], scratch: Path, patch_check: int | None) -> None:
    rec = _large_rec(ws, scratch)
    # bench_gpu's reduced settings, with the whole-request role and item-row scores capped (see CircuitSettings)
    settings = CircuitSettings(n_prompts=8, stability_seeds=1, batch_size=8, request_samples=REQUEST_SAMPLES,
                               patch_check=patch_check)
    stages = Stages()
    start = time.perf_counter()
    found = discover_circuits(replace(ws, root=scratch / "large"), rec, ws.forget_set(REQUEST), settings, progress=stages)
    checked = "every node" if patch_check is None else f"{patch_check} nodes"
    _show(rows, {"part": "large", "what": f"GPT-2-Large 2 x 20 discovery, 8 prompts, patching {checked}",
                 "seconds": time.perf_counter() - start, "by_stage": stages.spans(), "stage_seconds": found.seconds})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="floor,step,lab,train,readout,large")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--label", default="after")
    ap.add_argument("--patch-check", type=int, default=None, help="large: exact patching of this many nodes per side")
    args = ap.parse_args()
    parts = args.parts.split(",")
    ws = open_workspace(root=cache_root())
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        rec = train_recommender(ws) if {"floor", "step", "lab"} & set(parts) else None
        for part in parts:
            if part == "floor":
                floor(ws, rec, rows)
            elif part == "step":
                step(ws, rec, rows, args.steps)
            elif part == "lab":
                lab(ws, rec, rows)
            elif part == "train":
                train(ws, rows, Path(tmp))
            elif part == "readout":
                readout(ws, rows, Path(tmp))
            elif part == "large":
                large(ws, rows, Path(tmp), args.patch_check)
            else:
                raise SystemExit(f"unknown part {part!r}")
    print(f"\n{'part':<6} {'what':<62} {'seconds':>9}")
    for r in rows:
        print(f"{r['part']:<6} {r['what']:<62} {r['seconds']:>9.4f}")
        for stage, s in (r.get("by_stage") or {}).items():
            print(f"{'':<6}   {stage:<59} {s:>9.4f}")
    out = {"label": args.label, "rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine()}
    path = OUT / f"speed-{args.label}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
