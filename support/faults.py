"""The fault-injection harness: kill -9 trainings, circuit discoveries and unlearning runs at random points.

After every kill the cache is audited: every stored entry must verify against its manifest
(no partial or corrupted entry), and the rerun of the killed command must finish and leave no
temporary folder of a dead process behind. The original model's bytes are checksummed before and
after. Then a checkpoint, a circuit file and a run file are each corrupted: the next call must
quarantine the bad entry and rebuild it. benchmarks/bench_faults.py runs it with 10 kills per job and
records the table; tests/test_faults.py with one kill per job. It lives here, in support/, so that the
test does not import the benchmark.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("models", "circuits", "groups", "runs", "scores")
TINY = ["--n-prompts", "8", "--stability-seeds", "1", "--retain-samples", "1", "--ig-steps", "2"]


def job_argv(job: str, variant: int) -> list[str]:
    """A command whose key differs per variant, so each kill interrupts a real build, not a cache hit."""
    if job == "train":  # a retrain: the original is never the one being killed
        return ["train", "--forget", "users:0.2", "--forget-seed", str(variant)]
    if job == "circuits":
        return ["circuits", "--forget", "users:0.2", "--prompt-seed", str(variant), *TINY]
    if job == "unlearn":
        return ["unlearn", "--forget", "users:0.2", "--method", "cure", "--unlearn-seed", str(variant),
                "--steps", "4", "--batch-size", "8", *TINY]
    raise ValueError(job)


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@dataclass
class Kill:
    job: str
    variant: int
    delay: float
    killed: bool  # False when the command finished before the kill
    partial_entries: int
    rerun_ok: bool
    dead_tmp_after_rerun: int


@dataclass
class Harness:
    data: Path
    cache: Path
    common: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.common = ["--data", str(self.data), "--history", "5", "--cache", str(self.cache), "--epochs", "1",
                       "--json"]

    def command(self, argv: list[str]) -> list[str]:
        return [sys.executable, "-m", "analysis.cli", *argv, *self.common]

    def run(self, argv: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        """A command in its own process: what a kill interrupts, and what a clean run's span is drawn from."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(self.command(argv), capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)

    def run_here(self, argv: list[str]) -> subprocess.CompletedProcess:
        """The same command in this process. Recovery (sweeping a dead process's temp folder, quarantining a
        corrupted entry) is read from the cache, not from a fresh interpreter, so the original and every rerun
        skip the ~12 s of CPU a subprocess spends importing torch and transformers (7 of test_faults' 13
        commands)."""
        from analysis.cli.entry import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([*argv, *self.common])
            except Exception:  # what a subprocess would have printed before exiting 1
                traceback.print_exc()
                code = 1
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())

    def original(self) -> Path:
        out = self.run_here(["train"])
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return Path(json.loads(out.stdout)["model_dir"])

    def audit(self) -> tuple[int, int]:
        """(stored entries that fail verification, temp folders of dead processes)."""
        from analysis.cache import CacheError, dead_tmp_folders, verify

        partial = dead = 0
        for kind in KINDS:
            dead += len(dead_tmp_folders(self.cache / kind))
            for entry in (self.cache / kind).glob("*"):
                if entry.name.startswith(".tmp-"):
                    continue
                try:
                    verify(entry)
                except CacheError:
                    partial += 1
        return partial, dead

    def kill(self, job: str, variant: int, delay: float) -> Kill:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(self.command(job_argv(job, variant)), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        try:
            proc.wait(delay)
            killed = False
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL: no handler, no cleanup
            proc.wait()
            killed = True
        partial, _ = self.audit()
        rerun = self.run_here(job_argv(job, variant))
        dead_after = self.dead_tmp(job)
        return Kill(job, variant, round(delay, 2), killed, partial, rerun.returncode == 0, dead_after)

    def dead_tmp(self, job: str) -> int:
        """Temp folders of dead processes in the job's kind: its rerun built there, so it must have swept them."""
        from analysis.cache import dead_tmp_folders

        return len(dead_tmp_folders(self.cache / {"train": "models", "circuits": "circuits", "unlearn": "runs"}[job]))

    def corrupt_and_rebuild(self, job: str, variant: int, built: dict) -> dict:
        """Flip a byte in the artefact the job's clean run stored (`built`: its JSON output); the next call
        must quarantine it and rebuild."""
        name = {"train": "model.safetensors", "circuits": "circuit.json", "unlearn": "run.json"}[job]
        where = built[{"train": "model_dir", "circuits": "path", "unlearn": "run_dir"}[job]]
        target = Path(where) / name
        blob = bytearray(target.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        target.write_bytes(bytes(blob))
        quarantined = len(list((self.cache / "quarantine").glob("*"))) if (self.cache / "quarantine").is_dir() else 0
        again = self.run_here(job_argv(job, variant))
        after = len(list((self.cache / "quarantine").glob("*")))
        from analysis.cache import verify

        verify(target.parent)
        return {"job": job, "file": name, "rerun_ok": again.returncode == 0, "quarantined": after - quarantined}


def run_faults(data: Path, cache: Path, kills_per_job: int, seed: int = 0, log=print) -> dict:
    h = Harness(data, cache)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    original = h.original()
    before = tree_digest(original)
    typical, clean = {}, {}
    for job in ("train", "circuits", "unlearn"):  # one clean run each: the span kills are drawn from
        t = time.perf_counter()
        out = h.run(job_argv(job, 0))
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        typical[job], clean[job] = time.perf_counter() - t, json.loads(out.stdout)
    kills = []
    for k in range(kills_per_job):
        for job in ("train", "circuits", "unlearn"):
            kill = h.kill(job, 1 + k, rng.uniform(0.5, 0.9 * typical[job]))  # a clean run's span: most land
            log(f"{job:<9} variant {kill.variant:>3} kill at {kill.delay:5.1f} s  killed={kill.killed}  "
                f"partial={kill.partial_entries}  rerun_ok={kill.rerun_ok}  dead_tmp_after={kill.dead_tmp_after_rerun}")
            kills.append(kill)
    corruptions = [h.corrupt_and_rebuild(job, 0, clean[job]) for job in ("train", "circuits", "unlearn")]
    return {"kills": [asdict(k) for k in kills], "corruptions": corruptions, "typical_seconds": typical,
            "original_unchanged": tree_digest(original) == before, "seconds": time.perf_counter() - t0,
            "n_killed": sum(k.killed for k in kills), "partial_entries": sum(k.partial_entries for k in kills),
            "failed_reruns": sum(not k.rerun_ok for k in kills),
            "dead_tmp_left": sum(k.dead_tmp_after_rerun for k in kills)}
