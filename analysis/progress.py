"""Progress reporting: every long computation takes a `progress` callback.

A callback receives (stage, done, total). The CLI maps it to a tqdm bar on stderr,
the app to `st.progress`; analysis code never knows which.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

ProgressFn = Callable[[str, int, int], None]


def silent(stage: str, done: int, total: int) -> None:  # noqa: ARG001 - the null callback
    return None


def or_silent(progress: Optional[ProgressFn]) -> ProgressFn:
    return progress if progress is not None else silent


class StderrBars:
    """One tqdm bar per stage, written to stderr so stdout stays clean JSON."""

    def __init__(self) -> None:
        self._bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self._bars.get(stage)
        if bar is None:
            bar = tqdm(total=total, desc=stage, file=sys.stderr, leave=True, dynamic_ncols=True)
            self._bars[stage] = bar
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            self._bars.pop(stage, None)
