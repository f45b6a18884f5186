"""One job queue per cache: at most N heavy builds run at once, over every process and session.

No server: the queue is files under `<cache>/jobs/`. A job holds one of N slot locks
(`slot-<i>.lock`, an flock released by the kernel when its process dies, so a killed job never
holds a slot); a job waiting for a slot leaves a ticket (`queue/<ticket>.json`) so every waiter
can tell its place in line, first come first served. Tickets of dead processes are swept.

Why: two torch jobs on 2 cores slow each other 5x or more (a 73 s retrain took over 20 min
beside two others), so running them one after another finishes every one of them sooner.
Each running job sets torch's intra-op threads to cores // N, so the running jobs together
never ask for more threads than there are cores.

Slots are re-entrant per thread: a job that needs another artefact while it runs (an
unlearning run needing its retrain) builds it in its own slot instead of queueing behind itself.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

JOBS = "jobs"
LOG = "log.jsonl"  # one line per job start and end: what ran, for how long, how it ended
# How often a waiter (for a queue slot here, for an artefact lock in cache.py) polls, and tells its `on_wait`.
# They live here, not in cache.py, because the queue sits below the cache (cache.build_or_load runs every build
# in a slot of this queue): importing them from cache.py made the two modules import each other.
WAIT_POLL_SECONDS = 0.25
WAIT_TELL_SECONDS = 2.0



@dataclass(frozen=True)
class JobEvent:
    """One line of the queue's log: a job started, or ended (done, merged, failed, cancelled) after `seconds`."""
    event: str
    label: str
    pid: int
    at: float | None = None  # start lines: when (epoch seconds)
    seconds: float | None = None  # end lines: how long it ran
    nested: bool = False  # a job run inside another job's slot (it never waits for one)

    @classmethod
    def from_json(cls, d: dict) -> "JobEvent":
        return cls(d["event"], d["label"], d["pid"], d.get("at"), d.get("seconds"), d.get("nested", False))

def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def default_slots(cores: int | None = None) -> int:
    """1 on a machine with <= 4 cores (the issue's rule), else a quarter of the cores; $CURE_JOBS overrides."""
    if os.environ.get("CURE_JOBS"):
        return max(1, int(os.environ["CURE_JOBS"]))
    cores = cores or os.cpu_count() or 1
    return 1 if cores <= 4 else cores // 4


def threads_per_job(slots: int, cores: int | None = None) -> int:
    """The machine's cores shared by the slots; CURE_CORES caps the cores this process may use (two test
    workers on two cores take one each: two torch jobs that both think they own the machine slow each
    other 5x or more)."""
    return max(1, (cores or int(os.environ.get("CURE_CORES") or 0) or os.cpu_count() or 1) // slots)


@dataclass(frozen=True)
class QueueState:
    position: int  # 1 = next in line
    waiting: int  # tickets in the queue, this one included
    running: list[str]  # labels of the jobs holding slots

    @property
    def message(self) -> str:
        now = f"; running: {', '.join(self.running)}" if self.running else ""
        return f"waiting in the job queue: position {self.position} of {self.waiting}{now}"


@dataclass
class JobRecord:
    """What the body of a slot tells the job log: `found_built` when, once it held the slot, the artefact
    it queued for had been built meanwhile by an identical job (two requesters can both queue before
    either takes the artefact lock). Its end is then logged "merged", not "done": nothing was computed."""

    found_built: bool = False


class _Held:
    """How deep the current thread is inside a slot. Kept on the thread object itself, not in a module
    global: a server that reloads this module (Streamlit does when a source file changes) would otherwise
    give a job's nested builds a fresh count of 0, and they would queue behind their own job forever
    (seen: a load benchmark deadlocked this way while a file was edited)."""

    @property
    def depth(self) -> int:
        return getattr(threading.current_thread(), "_cure_slot_depth", 0)

    @depth.setter
    def depth(self, value: int) -> None:
        threading.current_thread()._cure_slot_depth = value


_held = _Held()


class JobCancelled(BaseException):
    """A watched job whose session stopped watching, with no one else waiting for its result (watched.py).

    A BaseException, like KeyboardInterrupt: a stop must pass through the `except Exception` of a
    study cell or a metric and end the job, not be recorded as that cell's failure."""


def _ending(exc: BaseException) -> str:
    """Ctrl-C, a watched job's stop, or Streamlit stopping a script for a Cancel click or a page switch is a
    cancellation. Known by name: analysis/ never imports streamlit, and a reloaded module's JobCancelled is
    another class."""
    return "cancelled" if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ in (
        "StopException", "RerunException", JobCancelled.__name__) else "failed"


def holds_slot() -> bool:
    return _held.depth > 0


@contextlib.contextmanager
def scheduled_elsewhere(threads: int) -> Iterator[None]:
    """The body runs in a task that another scheduler (Ray) placed with the CPUs it declared: its builds run
    at once instead of queueing for this cache's slots (that scheduler bounds how many run together, over
    machines this cache's flock slots cannot see), and torch uses the declared CPUs. Identical builds are
    still merged by the artefact lock, and the job log still records them (as nested)."""
    import torch

    before, depth = torch.get_num_threads(), _held.depth
    torch.set_num_threads(max(1, threads))
    _held.depth = depth + 1
    try:
        yield
    finally:
        _held.depth = depth
        torch.set_num_threads(before)


class JobQueue:
    def __init__(self, root: Path, slots: int | None = None) -> None:
        self.dir = Path(root) / JOBS
        self.slots = slots or default_slots()
        (self.dir / "queue").mkdir(parents=True, exist_ok=True)
        (self.dir / "running").mkdir(parents=True, exist_ok=True)

    def _tickets(self) -> list[Path]:
        """Live tickets, oldest first; tickets of dead processes are removed."""
        live = []
        for t in sorted((self.dir / "queue").glob("*.json")):
            try:
                pid = int(t.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if pid_alive(pid):
                live.append(t)
            else:
                t.unlink(missing_ok=True)
        return live

    def running(self) -> list[str]:
        """Labels of running jobs (their files are removed on exit; a dead process's are swept)."""
        out = []
        for f in sorted((self.dir / "running").glob("*.json")):
            try:
                info = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if pid_alive(int(info.get("pid", -1))):
                out.append(info.get("label", f.stem))
            else:
                f.unlink(missing_ok=True)
        return out

    def state(self, ticket: Path) -> QueueState:
        tickets = self._tickets()
        names = [t.name for t in tickets]
        position = names.index(ticket.name) + 1 if ticket.name in names else 1
        return QueueState(position, max(len(tickets), position), self.running())

    def _try_slot(self):
        for i in range(self.slots):
            fh = open(self.dir / f"slot-{i}.lock", "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fh
            except BlockingIOError:
                fh.close()
        return None

    @contextlib.contextmanager
    def slot(self, label: str, on_wait: Callable[[str], None] | None = None) -> Iterator[JobRecord]:
        """Hold a slot while the body runs; queue (telling `on_wait` the position) while none is free.

        `on_wait` is called again whenever the position changes and at least every few seconds, so
        a caller can cancel by raising from it (nothing is left behind: the ticket is removed)."""
        if holds_slot():  # a build inside a running job (its retrain, its groups): logged, not queued
            _held.depth += 1
            try:
                with self._logged(label, nested=True) as record:
                    yield record
            finally:
                _held.depth -= 1
            return
        ticket = self.dir / "queue" / f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        ticket.write_text(json.dumps({"label": label, "pid": os.getpid(), "since": time.time()}))
        fh, told, told_at = None, None, 0.0
        try:
            while fh is None:
                state = self.state(ticket)
                if state.position <= self.slots:  # first come, first served
                    fh = self._try_slot()
                if fh is None:
                    if on_wait and (state != told or time.monotonic() - told_at > WAIT_TELL_SECONDS):
                        on_wait(state.message)
                        told, told_at = state, time.monotonic()
                    time.sleep(WAIT_POLL_SECONDS)
        finally:
            ticket.unlink(missing_ok=True)
        marker = self.dir / "running" / f"{ticket.stem}.json"
        marker.write_text(json.dumps({"label": label, "pid": os.getpid(), "since": time.time()}))
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(threads_per_job(self.slots))
        _held.depth = 1
        try:
            with self._logged(label, nested=False) as record:
                yield record
        finally:
            _held.depth = 0
            torch.set_num_threads(threads)
            marker.unlink(missing_ok=True)
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    @contextlib.contextmanager
    def _logged(self, label: str, nested: bool) -> Iterator[JobRecord]:
        """A start line, then one line saying how the job ended (done, merged, failed or cancelled) and how
        long it took."""
        extra = {"nested": True} if nested else {}
        started, ended = time.time(), "failed"
        self._log({"event": "start", "label": label, "pid": os.getpid(), "at": started, **extra})
        record = JobRecord()
        try:
            yield record
            ended = "merged" if record.found_built else "done"
        except BaseException as exc:
            ended = _ending(exc)
            raise
        finally:
            self._log({"event": ended, "label": label, "pid": os.getpid(), "seconds": time.time() - started, **extra})

    def _log(self, entry: dict) -> None:
        """Append one line (O_APPEND: lines of concurrent jobs never interleave)."""
        with open(self.dir / LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def history(self) -> list[JobEvent]:
        path = self.dir / LOG
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(JobEvent.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill
        return out
