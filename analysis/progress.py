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


def within(progress: ProgressFn, job: str) -> ProgressFn:
    """A sub-job's stages reported as "<job>: <stage>" (a training's own evaluation stays in the training's
    stage instead of looking like the evaluation of the job around it); waiting messages pass as they are."""
    return lambda stage, done, total: progress(stage if stage.startswith("waiting") else f"{job}: {stage}",
                                               done, total)


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


# --- One progress model for every long action --------------------------------------------------
#
# Analysis code reports raw (stage, done, total) callbacks: "train", "eap-ig", "node patching",
# "unlearn", "score", ... A job (a lab run, a circuit discovery) is a plan of named stages, each
# gathering some raw names. `StagedProgress` turns the raw stream into one `ProgressView`:
# "stage k of n: <name>", a per-stage fraction and an overall fraction that never go backwards
# (a raw stage that restarts, e.g. EAP-IG once per stability seed, is a new pass of the same
# stage), "from cache" for stages a job skipped, a distinct waiting state when another
# session holds the lock, and a time-left estimate from stage costs measured on earlier jobs.

import json as _json
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

TIMINGS = "timings.json"  # under the cache root: measured stage costs, for the time-left estimates
FILLED_BY_EXPECTED_PASSES = 0.9  # passes beyond the expected count share the last 10% (halving)


@dataclass(frozen=True)
class Stage:
    name: str  # what a person reads: "retrain", "circuits", "unlearning", "evaluation"
    raw: tuple[str, ...]  # the raw stage names (prefixes) analysis code reports for it
    passes: int = 1  # how many raw passes to expect (e.g. one per stability seed and sub-stage)
    seconds: float = 10.0  # typical cost before any is measured


PLANS: dict[str, tuple[Stage, ...]] = {
    "train": (Stage("training", ("train",), seconds=90.0),),
    # attribution: per prompt-seed draw (3 by default) the forget and retain samples' graph attribution and
    # the whole request's input scores on each side (4 passes); per retain-sample draw (2 more) the retain
    # side's two (2 passes)
    "circuits": (Stage("attribution", ("eap", "patching", "request"), passes=16, seconds=200.0),
                 Stage("node patching", ("node patching", "embedding patching", "edge patching"), passes=2,
                       seconds=30.0),
                 Stage("faithfulness", ("faithfulness",), passes=3, seconds=10.0)),
    "unlearn": (Stage("retrain", ("train",), seconds=90.0),
                Stage("circuits", ("eap", "patching", "request", "node patching", "embedding patching",
                                   "edge patching", "faithfulness"), passes=4, seconds=50.0),
                Stage("unlearning", ("unlearn",), seconds=30.0),
                Stage("evaluation", ("score", "rank"), passes=4, seconds=20.0)),
}
PLANS["warm"] = (Stage("retrain", ("train",), seconds=90.0),
                 Stage("circuits", PLANS["unlearn"][1].raw, passes=20, seconds=240.0),
                 Stage("reference views", ("score", "rank"), passes=4, seconds=20.0))
PLANS["study"] = (Stage("study cells", ("study",), seconds=900.0),)
PLANS["unlearn-baseline"] = tuple(s for s in PLANS["unlearn"] if s.name != "circuits")
PLANS["retrain"] = tuple(s for s in PLANS["unlearn"] if s.name in ("retrain", "evaluation"))
# Which of the three lab plans a method's run follows is a fact of the method: MethodSpec.plan
# (analysis/unlearn/registry.py) names it; this module knows stages, not methods.


@dataclass
class ProgressView:
    stage: int  # 1-based
    n_stages: int
    name: str
    detail: str  # the raw stage and its count, e.g. "eap-ig 64/256"
    stage_fraction: float
    overall: float
    seconds_left: float | None
    waiting: str | None = None
    cached: tuple[str, ...] = ()  # stages skipped because their result was cached
    done: bool = False

    @property
    def text(self) -> str:
        head = f"stage {self.stage} of {self.n_stages}: {self.name}"
        if self.waiting:
            return f"{head}: {self.waiting}"
        parts = [head + (f" ({self.detail})" if self.detail else "") + f" {self.stage_fraction:.0%}"]
        if self.cached:
            parts.append("from cache: " + ", ".join(self.cached))
        if self.seconds_left is not None and not self.done:
            parts.append(f"about {_readable_seconds(self.seconds_left)} left")
        return " · ".join(parts)


def _readable_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


@dataclass
class _StageState:
    passes_done: int = 0
    last_raw: str | None = None
    last_done: int = -1
    fraction: float = 0.0
    started: float | None = None
    seconds: float = 0.0
    touched: bool = False


class StagedProgress:
    """A ProgressFn over a plan of stages that calls `on_view(ProgressView)`; nothing it reports decreases.

    `costs` (a JSON file) keeps the measured seconds of each stage of each plan, so the time
    left is estimated from this machine's own earlier jobs.
    """

    def __init__(self, plan: str | tuple[Stage, ...], on_view: Callable[[ProgressView], None],
                 costs: Path | None = None, clock: Callable[[], float] = _time.monotonic) -> None:
        self.plan_name = plan if isinstance(plan, str) else "custom"
        self.stages = PLANS[plan] if isinstance(plan, str) else tuple(plan)
        self.on_view, self.costs_path, self.clock = on_view, costs, clock
        self.state = [_StageState() for _ in self.stages]
        self.current = 0
        self.overall = 0.0
        self.costs = self._load_costs()
        self.waited_seconds = 0.0  # time spent waiting on another session's identical job
        self._waiting_since: float | None = None

    def _load_costs(self) -> dict[str, float]:
        measured = _measured_costs(self.plan_name, self.costs_path)
        return {s.name: float(measured.get(s.name, s.seconds)) for s in self.stages}

    def _stage_of(self, raw: str) -> int:
        for k, stage in enumerate(self.stages):
            if any(raw.startswith(prefix) for prefix in stage.raw):
                if k >= self.current:
                    return k
        return self.current  # an earlier stage's name (or an unknown one) counts toward the current stage

    def _advance_to(self, k: int) -> None:
        now = self.clock()
        while self.current < k:
            st = self.state[self.current]
            if st.started is not None:
                st.seconds = now - st.started
            st.fraction = 1.0
            self.current += 1
        if self.state[k].started is None:
            self.state[k].started = now

    def __call__(self, raw: str, done: int, total: int) -> None:
        if raw.startswith("waiting"):
            if self._waiting_since is None:
                self._waiting_since = self.clock()
            self._emit(waiting=raw)
            return
        self._stop_waiting()
        k = self._stage_of(raw)
        self._advance_to(k)
        st, stage = self.state[k], self.stages[k]
        st.touched = True
        if not any(raw.startswith(prefix) for prefix in stage.raw):  # a sub-job's own stage (a study cell's
            self._emit(detail=f"{raw} {done}/{total}")                 # training): said, not counted
            return
        if st.last_raw is not None and (raw != st.last_raw or done < st.last_done):
            st.passes_done += 1  # the raw stage restarted or changed: a new pass of the same stage
        st.last_raw, st.last_done = raw, done
        p = min(1.0, done / total) if total > 0 else 1.0
        if st.passes_done < stage.passes:
            f = FILLED_BY_EXPECTED_PASSES * (st.passes_done + p) / stage.passes
        else:
            extra = st.passes_done - stage.passes
            floor = 1 - (1 - FILLED_BY_EXPECTED_PASSES) * 0.5 ** extra
            f = floor + (1 - floor) * 0.5 * p
        st.fraction = max(st.fraction, min(f, 1.0))
        self._emit(detail=f"{raw} {done}/{total}")

    def _stop_waiting(self) -> None:
        if self._waiting_since is not None:
            self.waited_seconds += self.clock() - self._waiting_since
            self._waiting_since = None

    def finish(self) -> None:
        """The job is done: every stage complete, the measured costs saved for the next estimate."""
        self._stop_waiting()
        self._advance_to(len(self.stages) - 1)
        last = self.state[-1]
        if last.started is not None:
            last.seconds = self.clock() - last.started
        last.fraction = 1.0
        self._save_costs()
        self._emit(done=True)

    def _cached(self) -> tuple[str, ...]:
        return tuple(s.name for s, st in zip(self.stages, self.state[:self.current]) if not st.touched)

    def _seconds_left(self) -> float:
        left = (1 - self.state[self.current].fraction) * self.costs[self.stages[self.current].name]
        return left + sum(self.costs[s.name] for s in self.stages[self.current + 1:])

    def _emit(self, detail: str = "", waiting: str | None = None, done: bool = False) -> None:
        # the bar is the share of this job's *time*: a stage found in the cache costs nothing and weighs nothing
        # (weighted by their usual cost, two cached stages put the bar at 67% at once, then the real work crawled)
        skipped = set(self._cached())
        weights = [0.0 if s.name in skipped else max(self.costs[s.name], 1e-3) for s in self.stages]
        overall = sum(w * st.fraction for w, st in zip(weights, self.state)) / sum(weights)
        self.overall = max(self.overall, 1.0 if done else overall)
        st = self.state[self.current]
        self.on_view(ProgressView(self.current + 1, len(self.stages), self.stages[self.current].name, detail,
                                  1.0 if done else st.fraction, self.overall,
                                  None if done else self._seconds_left(), waiting, self._cached(), done))

    def _save_costs(self) -> None:
        if self.costs_path is None:
            return
        path = Path(self.costs_path)
        try:
            stored = _json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            stored = {}
        mine = dict(stored.get(self.plan_name, {}))
        for s, st in zip(self.stages, self.state):
            if st.touched and st.seconds > 0:  # cached stages cost nothing this time; keep the measured cost
                old = mine.get(s.name)
                mine[s.name] = st.seconds if old is None else 0.5 * old + 0.5 * st.seconds
        stored[self.plan_name] = mine
        try:
            from .cache import write_json_atomic

            write_json_atomic(path, stored)
        except OSError:
            pass  # the estimate is a convenience; a read-only cache must not fail the job


class StderrStages:
    """The CLI's rendering of a staged job: a line per stage change and one bar for the current stage."""

    def __init__(self) -> None:
        self._shown: tuple[int, str | None] | None = None
        self._bar = None

    def __call__(self, view: ProgressView) -> None:
        from tqdm import tqdm

        key = (view.stage, view.waiting)
        if key != self._shown:
            if self._bar is not None:
                self._bar.close()
            if view.cached:
                print(f"from cache: {', '.join(view.cached)}", file=sys.stderr)
            self._bar = tqdm(total=1000, desc=f"[{view.stage}/{view.n_stages}] {view.name}", file=sys.stderr,
                             leave=True, dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
            self._shown = key
        self._bar.n = int(view.stage_fraction * 1000)
        self._bar.set_postfix_str(view.waiting or view.detail, refresh=False)
        self._bar.refresh()
        if view.done:
            self._bar.close()
            self._bar = None


def _measured_costs(plan: str, costs: Path | None) -> dict[str, float]:
    """The measured seconds per stage of `plan` stored in `costs`; empty when none (an unreadable costs file
    only costs the estimate)."""
    if costs is None or not Path(costs).is_file():
        return {}
    try:
        measured = _json.loads(Path(costs).read_text()).get(plan, {})
    except (OSError, ValueError, AttributeError):
        return {}
    return measured if isinstance(measured, dict) else {}


def measured_seconds(plan: str, costs: Path | None) -> float | None:
    """What a whole job of `plan` took on this machine, or None where none has finished here yet."""
    measured = _measured_costs(plan, costs)
    return float(sum(measured.values())) if measured else None


def typical_seconds(plan: str, costs: Path | None, cached: tuple[str, ...] = ()) -> float:
    """What a job of `plan` costs on this machine: measured stage costs, else the plan's defaults; stages
    named in `cached` are found in the cache and cost nothing (a first CURE run with the retrain and the
    circuits cached took 66 s where the whole plan's 3 min was quoted)."""
    probe = StagedProgress(plan, lambda view: None, costs=costs)
    return sum(v for name, v in probe.costs.items() if name not in cached)
