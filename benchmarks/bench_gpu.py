"""GPU against CPU, and a GPT-2-Large-shaped model through circuits and a LoRA CURE run (issue 16).

    python benchmarks/bench_gpu.py [--json out.json] [--parts default,large]

1. The default model (ML-100K, the default recipe): train, circuits (default settings), a CURE run
   and one baseline (NPO), once on the CPU and once on the GPU, each in a fresh cache (the data is
   read from ./cache/data, so nothing is downloaded: carry cache/data to a machine without internet).
2. A GPT-2-Large-shaped model (36 layers x 20 heads, d_model 1280; random weights, no hub here) as
   a title-prompt recommender: circuit discovery (EAP-IG over every head and MLP, 256 prompts per
   side, one seed) and a LoRA CURE run (rank 8) on the groups it found. Seconds and peak GPU memory.

It runs unchanged on a machine with one CUDA GPU. Without one it runs the CPU half of part 1 and a
reduced part 2 (2 layers, 8 prompts per side) and says so in the table and the JSON. Circuit discovery
also patches every node exactly (the EAP-IG check), one forward pass per node and batch: that, not
EAP-IG, dominates on a CPU; `eap_ig_seconds` is the attribution stage alone. Each row is printed as
it finishes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.cache import cache_root  # noqa: E402
from analysis.circuits.discover import CircuitSettings, discover_circuits  # noqa: E402
from analysis.compute import resolve  # noqa: E402
from analysis.config import ModelConfig, TrainConfig  # noqa: E402
from analysis.model.adapters import AdapterConfig  # noqa: E402
from analysis.model.evaluate import ModelEvaluation  # noqa: E402
from analysis.model.prompts import make_format  # noqa: E402
from analysis.model.recommender import Recommender  # noqa: E402
from analysis.model.train import train_recommender  # noqa: E402
from analysis.unlearn.lab import unlearn  # noqa: E402
from analysis.unlearn.run import UnlearnConfig, unlearn_steps  # noqa: E402
from analysis.workspace import open_workspace  # noqa: E402

REQUEST = "users:0.1"
LARGE = dict(n_layer=36, n_head=20, n_embd=1280, vocab_size=50257)  # GPT-2 Large's shape
REDUCED = dict(n_layer=2, n_head=20, n_embd=1280, vocab_size=50257)  # CPU: 4 layers x 16 prompts had not finished circuits after 12 min


class Stages:
    """Progress callback that remembers when each raw stage was first and last reported."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.first.setdefault(stage, now)
        self.last[stage] = now

    def spans(self) -> dict[str, float]:
        """Each stage's first-to-last report (stages that interleave overlap)."""
        return {s: self.last[s] - self.first[s] for s in self.first}

    def seconds(self, prefix: str) -> float | None:
        spans = [self.last[s] - self.first[s] for s in self.first if s.startswith(prefix)]
        return sum(spans) if spans else None


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def _show(row: dict) -> dict:
    print(json.dumps(row, default=str), flush=True)
    return row


def _timed(device: str, fn):
    _peak_reset(device)
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start, _peak_gib(device)


def default_model(device: str, scratch: Path) -> list[dict]:
    """Train, circuits, CURE and NPO on the default recipe, in a fresh cache (only the data is shared)."""
    ws = replace(open_workspace(root=cache_root()), root=scratch / device.replace(":", ""))
    rows = []
    with resolve(device).active():
        rec, s, peak = _timed(device, lambda: train_recommender(ws, None, ModelConfig(), TrainConfig()))
        rows.append(_show({"part": "default", "device": device, "step": "train (3 epochs)", "seconds": s, "peak_gib": peak,
                     "test_auc": ModelEvaluation.of(rec).test.auc}))
        forget = ws.forget_set(REQUEST)
        stages = Stages()
        found, s, peak = _timed(device, lambda: discover_circuits(ws, rec, forget, CircuitSettings(), progress=stages))
        rows.append(_show({"part": "default", "device": device, "step": "circuits (256 prompts, 3 seeds)", "seconds": s,
                     "peak_gib": peak, "eap_ig_seconds": stages.seconds("eap-ig")}))
        for method in ("cure", "npo"):
            run, s, peak = _timed(device, lambda: unlearn(ws, rec, forget, UnlearnConfig(method=method)))
            rows.append(_show({"part": "default", "device": device, "step": f"{method} run (+ retrain when not cached)",
                         "seconds": s, "peak_gib": peak, "steps_seconds": run.seconds,
                         "retrain_seconds": run.retrain_seconds, "auc_forget": run.metrics.auc_forget}))
    return rows


def _title_backbone(folder: Path, titles, shape: dict) -> Path:
    """A randomly initialised GPT-2 of the given shape with a byte-level BPE trained on the titles here."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = list(titles) + ["A user rated movies from 1 to 5 stars. Will they like the last movie? Yes or No."]
    bpe.train_from_iterator(corpus, vocab_size=4000, min_frequency=1)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save(str(folder / "tokenizer.json"))
    GPT2TokenizerFast(tokenizer_file=str(folder / "tokenizer.json")).save_pretrained(folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=1024, **shape)).save_pretrained(folder)
    return folder


def title_recommender(ws, folder: Path) -> Recommender:
    """The backbone in `folder` as an (untrained) title-prompt recommender, placed on the active compute."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.compute import place

    tok = AutoTokenizer.from_pretrained(folder)
    model = place(AutoModelForCausalLM.from_pretrained(folder)).eval()
    return Recommender(model, tok, make_format("title", tok, ws.data), {"prompt_format": "title", "backbone": str(folder)},
                       folder)


def large_model(device: str, scratch: Path, reduced: bool) -> list[dict]:
    shape, prompts = (REDUCED, 8) if reduced else (LARGE, 256)
    label = f"GPT-2-Large-shaped ({shape['n_layer']} x {shape['n_head']}, d {shape['n_embd']})"
    ws = replace(open_workspace(root=cache_root()), root=scratch / f"large-{device.replace(':', '')}")
    folder = _title_backbone(scratch / f"backbone-{shape['n_layer']}", ws.data.items["title"], shape)
    rows = []
    with resolve(device).active():
        rec = title_recommender(ws, folder)
        forget = ws.forget_set(REQUEST)
        settings = CircuitSettings(n_prompts=prompts, stability_seeds=1, batch_size=16 if not reduced else 8)
        stages = Stages()
        found, s, peak = _timed(device, lambda: discover_circuits(ws, rec, forget, settings, progress=stages))
        rows.append(_show({"part": label, "device": device, "step": f"circuits, EAP-IG, {prompts} prompts per side",
                     "seconds": s, "peak_gib": peak, "eap_ig_seconds": stages.seconds("eap-ig"),
                     "nodes": len(found.labels)}))
        cfg = UnlearnConfig(method="cure", steps=10, batch_size=16, circuits=settings,
                            adapter=AdapterConfig(rank=8), groups=found.labels)
        out, s, peak = _timed(device, lambda: unlearn_steps(ws, rec, forget, cfg, found.labels))
        rows.append(_show({"part": label, "device": device, "step": "LoRA CURE, rank 8, 10 steps", "seconds": s,
                     "peak_gib": peak}))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--parts", default="default,large")
    args = ap.parse_args()
    gpu = "cuda:0" if torch.cuda.is_available() else None
    parts = set(args.parts.split(","))
    note = None if gpu else "no CUDA GPU here: CPU half of part 1 only, and part 2 at a reduced size"
    if note:
        print(f"NOTE: {note}", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        scratch = Path(tmp)
        if "default" in parts:
            for device in ["cpu"] + ([gpu] if gpu else []):
                rows += default_model(device, scratch)
        if "large" in parts:
            rows += large_model(gpu or "cpu", scratch, reduced=gpu is None)
    speedups = {}
    for step in {r["step"] for r in rows if r["part"] == "default"}:
        by = {r["device"]: r["seconds"] for r in rows if r["step"] == step}
        if gpu and "cpu" in by and gpu in by:
            speedups[step] = by["cpu"] / by[gpu]
    print(f"{'part':<44} {'device':<7} {'step':<42} {'seconds':>8} {'peak GiB':>9}")
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(f"{r['part']:<44} {r['device']:<7} {r['step']:<42} {r['seconds']:>8.1f} {peak:>9}")
    for step, x in speedups.items():
        print(f"speed-up on GPU, {step}: {x:.1f}x")
    out = {"rows": rows, "speedups": speedups, "note": note, "gpu": torch.cuda.get_device_name(0) if gpu else None,
           "torch": torch.__version__}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    else:
        print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
