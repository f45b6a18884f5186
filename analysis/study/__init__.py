"""The evidence study (`cure study`): a resumable grid of cached runs, and its report."""
from __future__ import annotations

import time
from pathlib import Path

from ..model.recommender import Recommender
from ..progress import ProgressFn
from ..workspace import Workspace
from .grid import StudyConfig, run_study
from .report import write_report
from .result import StudyResult


def run_and_report(ws: Workspace, original: Recommender, config: StudyConfig,
                   progress: ProgressFn | None = None, transfer: Workspace | None = None,
                   executor=None) -> tuple[Path, StudyResult]:
    """Run (or resume) the study and write its report; returns the report folder and the results.

    `transfer`: a second dataset's workspace (same cache root) for the transfer section.
    `executor`: where cells run (study/executors.py; default: here, one after another).
    """
    start = time.perf_counter()
    result = run_study(ws, original, config, progress, transfer, executor)
    return write_report(ws, original, result, time.perf_counter() - start), result
