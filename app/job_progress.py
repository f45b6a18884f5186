"""A job's progress on a page: one bar over the whole job that never goes back, and its Cancel button."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from analysis.progress import TIMINGS, ProgressView, StagedProgress


@dataclass(frozen=True)
class ProgressBox:
    """The placeholders of a job's bar and of its Cancel button.

    A job runs in a worker thread this session watches (analysis.watched.run_watched). When its tab
    closes (since Streamlit 1.18 a disconnect stops the script at its next call), or Cancel is clicked,
    the session stops watching: the job ends at its next step like a cancelled one, unless another
    session waits for the same artefact; then it runs on for that one (the browser tests check both)."""

    bar: object
    cancel: object

    def done(self) -> None:
        """The job finished: its bar stays (at 100%), its Cancel button goes."""
        self.cancel.empty()

    def empty(self) -> None:
        self.bar.empty()
        self.cancel.empty()


def staged_progress(plan: str, label: str, root=None, cancel_key: str | None = None):
    """The one progress model on a page: one bar over the whole job that never goes back, its text
    "stage k of n: <name> (<detail>) <stage %> · from cache: ... · about <t> left" (or the waiting state),
    and, with `cancel_key`, a Cancel button beside it (see `cancelled`).

    Returns the ProgressBox (clear it, or `done()` to keep the bar) and the StagedProgress (a ProgressFn;
    call `finish()`).
    """
    box = ProgressBox(st.empty(), st.empty())
    overall = box.bar.progress(0.0, text=label)
    if cancel_key:
        # Clicking makes Streamlit rerun the page, which stops this session watching at its next progress
        # redraw (a Streamlit call raises there); the job then stops at its next step unless another
        # session waits for it: the build's temp folder is removed, nothing partial is stored, the queue
        # slot goes to the next job. The callback leaves a note for the rerun to show.
        box.cancel.button("Cancel", key=cancel_key,
                          on_click=lambda: st.session_state.update({f"{cancel_key}:cancelled": True}))
    last = {"at": 0.0, "stage": 0}

    def show(view: ProgressView) -> None:
        # at most ~2 redraws a second within a stage (each is a message to the browser); stage changes,
        # waiting and the end always show
        now = time.monotonic()
        if now - last["at"] < 0.5 and view.stage == last["stage"] and not (view.done or view.waiting):
            return
        last.update(at=now, stage=view.stage)
        overall.progress(view.overall, text=f"{label} · {view.text}")

    costs = Path(root) / TIMINGS if root is not None else None
    return box, StagedProgress(plan, show, costs=costs)


def cancelled(cancel_key: str) -> bool:
    """True once after the job with this Cancel button was cancelled (and says so on the page)."""
    if not st.session_state.pop(f"{cancel_key}:cancelled", False):
        return False
    st.warning("Cancelled: the job stopped at its next step. Nothing partial was stored, and its place in the "
               "job queue went to the next job. (If another session was waiting for the same result, the job "
               "runs on for that session instead.)")
    return True
