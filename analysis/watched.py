"""A job run in a worker thread that one session watches, and that outlives the session only for others.

The app's pages used to run a job in the session's own script thread, so a closed tab (Streamlit
stops the script at its next call) ended the job even when another session was waiting for the very
same artefact: that session then built it again from the start. Here the job runs in a worker
thread; the session's thread only relays the job's callbacks (progress bars, live charts), which
must run there because Streamlit calls work only in a script thread. When the session stops
watching (its tab closed, a Cancel click, a page switch: Streamlit raises in the watching thread),
the job is detached, and at each of its step boundaries it asks whether anyone still waits for what
it is building (`cache.someone_waits_for_this_thread`, the waiter markers of `cache.key_lock`, in
any process). If so it runs on, and its result lands in the cache for them; if not it stops there
with `JobCancelled`, and nothing partial is stored (`build_or_load` removes its folder).

No Streamlit here: the caller passes plain callables and gets the job's result, or its error.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, TypeVar

from . import compute
from .cache import someone_waits_for_this_thread
from .jobs import JobCancelled

T = TypeVar("T")
POLL_SECONDS = 0.1
HEARTBEAT_SECONDS = 5.0


class _Watch:
    def __init__(self) -> None:
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.detached = threading.Event()
        self.finished = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def relay(self, callback: Callable[..., None]) -> Callable[..., None]:
        """What the job calls instead of `callback`: a step boundary, where a detached job stops unless
        someone waits for it; while watched, the call is queued for the watching thread."""

        def relayed(*args: Any, **kwargs: Any) -> None:
            if self.detached.is_set():
                if not someone_waits_for_this_thread():
                    raise JobCancelled("the job's session left and no one else waits for it")
                return  # no one draws this session's bars any more
            self.events.put((callback, args, kwargs))

        return relayed

    def drain(self) -> bool:
        """Run the queued callbacks here (the watching thread); True if there were any."""
        ran = False
        while True:
            try:
                callback, args, kwargs = self.events.get_nowait()
            except queue.Empty:
                return ran
            callback(*args, **kwargs)
            ran = True


def run_watched(work: Callable[..., T], progress: Callable[[str, int, int], None],
                **callbacks: Callable[..., None]) -> T:
    """`work(progress, **callbacks)` in a worker thread, with each callback run in this thread.

    Returns the job's result or raises its error here. If this thread is stopped while the job runs
    (any exception raised by a callback or by the caller's runtime), the job is detached and runs on
    only while another requester waits for an artefact it is building. At least every
    HEARTBEAT_SECONDS the last progress report is repeated, so a runtime that stops a thread at its
    next call (Streamlit) notices a closed tab even during a long quiet step. Not more often: every
    repeat is a message each open tab renders, and with 8 sessions on 2 cores the browsers already
    used as much CPU as the server (bench_load).
    """
    watch = _Watch()
    last: list[tuple] = []

    def remember(*args: Any) -> None:
        last[:] = [args]
        progress(*args)

    relayed = {name: watch.relay(fn) for name, fn in callbacks.items()}
    on_progress = watch.relay(remember)
    active = compute.current()  # the session's device and precision, per thread

    def job() -> None:
        try:
            with active.active():
                watch.result = work(on_progress, **relayed)
        except BaseException as exc:  # handed to the watching thread, which raises it there
            watch.error = exc
        finally:
            watch.finished.set()

    worker = threading.Thread(target=job, name="cure-job", daemon=True)
    worker.start()
    try:
        told_at = time.monotonic()
        while not watch.finished.wait(POLL_SECONDS):
            if watch.drain():
                told_at = time.monotonic()
            elif last and time.monotonic() - told_at >= HEARTBEAT_SECONDS:
                progress(*last[0])
                told_at = time.monotonic()
        watch.drain()
    except BaseException:
        watch.detached.set()
        raise
    if watch.error is not None:
        raise watch.error
    return watch.result
