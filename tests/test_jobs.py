"""The job queue: N slots over every process and thread of a cache, FIFO positions, merged identical jobs."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from analysis.cache import build_or_load
from analysis.jobs import JobQueue, default_slots, threads_per_job


def test_one_slot_runs_jobs_one_after_another_and_tells_waiters_their_place(tmp_path):
    queue = JobQueue(tmp_path, slots=1)
    log, messages, lock = [], {}, threading.Lock()

    def job(name: str, delay: float) -> None:
        time.sleep(delay)  # arrive in order a, b, c
        got = []
        with queue.slot(name, on_wait=got.append):
            with lock:
                log.append(("start", name, torch.get_num_threads()))
            time.sleep(0.6)
            with lock:
                log.append(("end", name))
        messages[name] = got

    threads = [threading.Thread(target=job, args=(n, d)) for n, d in (("a", 0), ("b", 0.15), ("c", 0.3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    order = [(e[0], e[1]) for e in log]
    assert order == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b"), ("start", "c"), ("end", "c")]
    assert all(e[2] == threads_per_job(1) for e in log if e[0] == "start")
    assert messages["a"] == []
    assert messages["b"][0] == "waiting in the job queue: position 1 of 1; running: a", messages["b"]
    assert "waiting in the job queue: position 1 of 2; running: a" in messages["b"]  # c arrived behind b
    assert any("position 2 of 2" in m for m in messages["c"]), messages["c"]
    assert not list((tmp_path / "jobs" / "queue").iterdir()) and not list((tmp_path / "jobs" / "running").iterdir())


def test_slots_are_reentrant_within_a_job(tmp_path):
    queue = JobQueue(tmp_path, slots=1)
    with queue.slot("outer"):
        with queue.slot("inner (e.g. the retrain an unlearning run needs)"):
            pass
    with queue.slot("again"):  # released properly
        pass
    events = [(e.label.split()[0], e.event, e.nested) for e in queue.history()]
    assert events == [("outer", "start", False), ("inner", "start", True), ("inner", "done", True),
                      ("outer", "done", False), ("again", "start", False), ("again", "done", False)]


def test_two_slots_let_two_jobs_run_and_each_gets_half_the_cores(tmp_path):
    queue = JobQueue(tmp_path, slots=2)
    inside, peak, lock = [0], [0], threading.Lock()

    def job() -> None:
        with queue.slot("j"):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.4)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak[0] == 2
    assert threads_per_job(2, cores=8) == 4 and threads_per_job(4, cores=2) == 1


def test_default_slots_follow_the_core_count(monkeypatch):
    monkeypatch.delenv("CURE_JOBS", raising=False)
    assert default_slots(2) == 1 and default_slots(4) == 1 and default_slots(16) == 4
    monkeypatch.setenv("CURE_JOBS", "3")
    assert default_slots(2) == 3


HOLDER = """
import sys, time
from analysis.jobs import JobQueue
with JobQueue(sys.argv[1], slots=1).slot("holder"):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_killed_job_frees_its_slot_and_leaves_no_ticket(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout.readline().strip() == "holding"
    queue = JobQueue(tmp_path, slots=1)
    assert queue.running() == ["holder"]
    seen = []
    threading.Timer(0.8, lambda: os.kill(proc.pid, 9)).start()
    t0 = time.monotonic()
    with queue.slot("next", on_wait=seen.append):
        waited = time.monotonic() - t0
    proc.wait(10)
    assert 0.5 < waited < 10 and seen and "running: holder" in seen[0]
    assert queue.running() == []  # the dead holder's marker is swept


def test_identical_builds_are_merged_and_run_once(tmp_path):
    calls, waits = [], []

    def build(tmp: Path) -> None:
        calls.append(1)
        time.sleep(0.8)
        (tmp / "x.txt").write_text("done")

    def requester(i: int) -> None:
        time.sleep(0.2 * i)
        path = build_or_load(tmp_path, "runs", "samekey", build, on_wait=waits.append)
        assert (path / "x.txt").read_text() == "done"

    threads = [threading.Thread(target=requester, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1
    assert [e.event for e in JobQueue(tmp_path).history()] == ["start", "done"]  # one job ran, and finished
    assert waits and all(w.startswith("waiting for another run that is building this run") for w in waits), waits


def test_reentrancy_survives_a_module_reload(tmp_path):
    """Streamlit reloads changed modules in a running server; a job's nested build must still see its slot."""
    import importlib

    import analysis.jobs as jobs

    with jobs.JobQueue(tmp_path, slots=1).slot("outer"):
        fresh = importlib.reload(jobs)
        done = threading.Event()

        def nested() -> None:
            with fresh.JobQueue(tmp_path, slots=1).slot("inner"):
                done.set()

        nested()  # same thread: must not queue behind its own job
        assert done.is_set()


def test_a_job_that_finds_its_artefact_built_while_it_queued_is_logged_merged(tmp_path):
    """Two requesters can both queue for a slot before either holds the artefact lock: the second then finds
    the first one's result. Its job ends "merged", so the log counts one build, not two."""
    calls, hold, release = [], threading.Event(), threading.Event()

    def other_job() -> None:
        with JobQueue(tmp_path, slots=1).slot("other"):
            hold.set()
            release.wait(10)

    def requester() -> None:
        build_or_load(tmp_path, "runs", "raced", lambda tmp: calls.append((tmp / "x.txt").write_text("built")))

    blocker = threading.Thread(target=other_job)
    blocker.start()
    hold.wait(10)
    first, second = threading.Thread(target=requester), threading.Thread(target=requester)
    first.start()
    time.sleep(0.3)  # first in line
    second.start()
    time.sleep(0.3)  # both queued behind the other job, neither holds the artefact lock yet
    release.set()
    for t in (blocker, first, second):
        t.join(30)
    assert len(calls) == 1
    events = [(e.label.split()[0], e.event) for e in JobQueue(tmp_path).history() if e.event != "start"]
    assert events == [("other", "done"), ("run", "done"), ("run", "merged")], events
