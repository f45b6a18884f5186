"""Seconds per named section of a loop, summed over its repeats: where a run's time goes.

A run carries one (`unlearn_steps` stores its sums in run.json as `stage_seconds`), and
benchmarks/bench_speed.py prints them per step. Timing a section costs two `perf_counter`
calls; on an accelerator the sections would need a synchronise to be exact, which this clock
does not do (it would slow the run it measures), so off the CPU its split is indicative only.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class StageClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def per(self, n: int) -> dict[str, float]:
        """Each stage's seconds divided by n (a count of steps)."""
        return {k: v / max(1, n) for k, v in self.seconds.items()}
