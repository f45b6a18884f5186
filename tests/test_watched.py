"""A watched job: callbacks run in the watching thread; a job whose watcher leaves runs on only for waiters."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from analysis import compute
from analysis.cache import build_or_load, waiters
from analysis.errors import DataError
from analysis.jobs import JobQueue
from analysis.watched import run_watched

KIND, KEY = "runs", "f" * 16


class SessionGone(BaseException):
    """What Streamlit raises in a script thread whose tab closed (StopException), here by name only."""


def _steps(n: int, started: threading.Event | None = None, pause: float = 0.02):
    """A build that reports n progress steps, pausing between them."""

    def build(tmp: Path, progress) -> None:
        for i in range(n):
            progress("unlearning", i, n)
            if started is not None:
                started.set()
            time.sleep(pause)
        (tmp / "result.txt").write_text("built")

    return build


def _ended(root: Path, seconds: float = 30) -> list[str]:
    """The job log's events once the (detached) job has ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        events = [e.event for e in JobQueue(root).history() if not e.nested]
        if events and events[-1] != "start":
            return events
        time.sleep(0.05)
    raise AssertionError(f"the job did not end: {JobQueue(root).history()}")


def test_the_job_runs_in_a_worker_and_its_callbacks_in_the_watching_thread(tmp_path):
    here = threading.get_ident()
    progress_threads, step_threads, job_threads, seen = set(), set(), set(), []

    def work(progress, step):
        job_threads.add(threading.get_ident())
        seen.append(compute.current().eval_batch)
        for i in range(3):
            progress("unlearning", i, 3)
            step({"step": i})
        return "result"

    with compute.resolve("cpu", "float32", eval_batch=7).active():
        out = run_watched(work, lambda *a: progress_threads.add(threading.get_ident()),
                          step=lambda row: step_threads.add(threading.get_ident()))
    assert out == "result"
    assert progress_threads == step_threads == {here}
    assert job_threads and here not in job_threads
    assert seen == [7]  # the session's compute choice travels with the job


def test_the_jobs_error_is_raised_in_the_watching_thread():
    def work(progress):
        progress("training", 0, 1)
        raise DataError("ratings.csv: line 3 has 2 fields")

    with pytest.raises(DataError, match="line 3"):
        run_watched(work, lambda *a: None)


def test_a_job_whose_watcher_leaves_stops_at_its_next_step_when_no_one_waits(tmp_path):
    calls = []

    def progress(stage, done, total):
        calls.append(done)
        if len(calls) == 3:
            raise SessionGone()

    with pytest.raises(SessionGone):
        run_watched(lambda p: build_or_load(tmp_path, KIND, KEY, lambda tmp: _steps(200)(tmp, p)), progress)
    assert _ended(tmp_path) == ["start", "cancelled"]
    assert not (tmp_path / KIND / KEY).exists()  # nothing partial stored
    assert not list((tmp_path / KIND).glob(".tmp-*"))


def test_a_job_whose_watcher_leaves_runs_on_for_a_session_that_waits_for_it(tmp_path):
    started, rebuilt, got = threading.Event(), [], {}

    def waiting_session():
        started.wait(10)
        path = build_or_load(tmp_path, KIND, KEY, lambda tmp: rebuilt.append(1))
        got["text"] = (path / "result.txt").read_text()

    def progress(stage, done, total):
        if waiters(tmp_path, KIND, KEY):  # the other session is now waiting for this job: this one leaves
            raise SessionGone()

    other = threading.Thread(target=waiting_session)
    other.start()
    with pytest.raises(SessionGone):
        run_watched(lambda p: build_or_load(tmp_path, KIND, KEY, lambda tmp: _steps(60, started)(tmp, p)),
                    progress)
    other.join(60)
    assert got == {"text": "built"} and rebuilt == []  # built once, by the job whose session left
    assert _ended(tmp_path) == ["start", "done"]
    assert waiters(tmp_path, KIND, KEY) == 0


def test_the_job_stops_once_its_last_waiter_leaves_too(tmp_path):
    started, waiting, leave = threading.Event(), threading.Event(), threading.Event()

    def impatient_session():
        started.wait(10)

        def on_wait(message):
            waiting.set()
            if leave.is_set():
                raise SessionGone()  # this session's tab closed too, while it waited

        with pytest.raises(SessionGone):
            build_or_load(tmp_path, KIND, KEY, lambda tmp: None, on_wait=on_wait)

    def progress(stage, done, total):
        if waiting.is_set():
            raise SessionGone()

    other = threading.Thread(target=impatient_session)
    other.start()
    with pytest.raises(SessionGone):
        run_watched(lambda p: build_or_load(tmp_path, KIND, KEY, lambda tmp: _steps(2000, started, 0.01)(tmp, p)),
                    progress)
    assert waiters(tmp_path, KIND, KEY) == 1  # the job runs on for the waiter
    leave.set()
    other.join(30)
    assert _ended(tmp_path) == ["start", "cancelled"]  # long before its 2000 steps (20 s) were done
    assert not (tmp_path / KIND / KEY).exists()


def test_markers_of_dead_waiters_do_not_count_and_are_swept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "locks" / "waiters"
    folder.mkdir(parents=True)
    (folder / f"{KIND}-{KEY}-{int(dead.stdout)}-abcd1234").touch()
    assert waiters(tmp_path, KIND, KEY) == 0
    assert not list(folder.iterdir())
