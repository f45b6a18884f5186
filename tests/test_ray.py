"""Study cells on a local Ray instance: the same results as the local executor, and a killed worker's cell
retried without a corrupted cache entry. Skipped (with the reason) only when Ray cannot start here."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from analysis.cache import dead_tmp_folders, verify
from analysis.circuits.discover import CircuitSettings
from analysis.errors import SettingsError
from analysis.model.recommender import load_recommender
from analysis.model.train import train_recommender
from analysis.study import run_and_report
from analysis.study.executors import RayExecutor, make_executor
from analysis.study.grid import StudyConfig
from analysis.workspace import Workspace
from tests.conftest import TINY_MODEL, TINY_TRAIN

RAY_STUDY = StudyConfig(seeds=(0,), request="users:0.2", lrs=(0.003,), rates=("users:0.2",), levels=("users:0.2",),
                        training_seeds=1,
                        steps=2, circuits=CircuitSettings(n_prompts=8, stability_seeds=1, batch_size=8, ig_steps=2))
TIMING = ("seconds", "retrain_seconds", "run_dir")  # where and how fast, not what


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="ray is not installed (it is in requirements.lock)")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - whatever stops Ray here is the reason to report
        pytest.skip(f"Ray cannot start on this machine: {exc}")
    yield ray
    ray.shutdown()


def _in_cache(ws: Workspace, rec, root: Path):
    """The same data and the same original model (its folder copied, so cache keys agree) in another cache."""
    other = Workspace(ws.data, ws.interactions, ws.config, root)
    target = root / "models" / rec.path.name
    shutil.copytree(rec.path, target)
    return other, load_recommender(target, ws.data)


def _what(result) -> list[dict]:
    return [{k: (Path(v).name if k == "run_dir" else v) for k, v in r.items() if k not in TIMING[:2]}
            for r in result.rows]


def test_ray_cells_give_the_local_executors_results(ray_instance, tiny_ws, tmp_path, monkeypatch):
    rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    ws_local, rec_local = _in_cache(tiny_ws, rec, tmp_path / "local-cache")
    executor = RayExecutor(cpus_per_cell=1)
    _, on_ray = run_and_report(tiny_ws, rec, RAY_STUDY, executor=executor)
    monkeypatch.setenv("CURE_JOBS", "2")  # two slots on 2 cores: one torch thread per job, as each Ray task has
    _, here = run_and_report(ws_local, rec_local, RAY_STUDY)
    assert len(on_ray.rows) == len(here.rows) >= 10
    assert _what(on_ray) == _what(here)  # every metric of every cell, bit for bit, and the same run keys
    for key in ("pareto", "headline", "rates", "levels", "compared_methods"):
        strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows] \
            if isinstance(rows, list) and rows and isinstance(rows[0], dict) else rows  # noqa: E731
        assert strip(getattr(on_ray, key)) == strip(getattr(here, key))
    assert len(executor.seconds_per_cell) >= 1  # overhead per cell is measured (bench_ray prints it)


def _cell_workers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::cell_task"):
            out.append(p)
    return out


def test_a_killed_workers_cell_is_retried_without_a_corrupted_entry(ray_instance, tiny_ws):
    rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.setdefault(
        "result", run_and_report(tiny_ws, rec, RAY_STUDY, executor=RayExecutor(cpus_per_cell=1))[1]))
    worker.start()
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and worker.is_alive() and time.monotonic() < deadline:
        running = _cell_workers()
        if running:
            time.sleep(1.0)  # mid-cell
            try:
                os.kill(running[0].pid, signal.SIGKILL)
                killed = running[0].pid
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    worker.join(timeout=900)
    assert killed is not None, "no cell task was seen running"
    assert "result" in outcome, "the study did not finish after a worker was killed"
    assert all(r["mia_auc"] is not None for r in outcome["result"].rows)
    for kind in ("runs", "models", "circuits"):
        folder = tiny_ws.root / kind
        for entry in folder.iterdir():
            if not entry.name.startswith("."):
                verify(entry)  # every stored entry intact
        assert dead_tmp_folders(folder) == []  # the killed attempt's temp folder was swept by its retry


def test_executor_choices_are_checked():
    assert make_executor("local").name == "local"
    with pytest.raises(SettingsError, match="unknown executor"):
        make_executor("dask")
    with pytest.raises(SettingsError, match="--address is for --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(SettingsError, match="--cpus-per-cell"):
        make_executor("ray", cpus_per_cell=0)
