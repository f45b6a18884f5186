"""Who runs the study's cells: one after another here (`local`), or as tasks on a Ray cluster (`ray`).

Every cell is an ordinary cached run, written with the cache's atomic rename under its
artefact lock, so where a cell runs changes nothing in what it stores: the report of a
study is the same from either executor. With Ray the cache directory must be on storage
that every node mounts at the same path (NFS, a shared disk), and every node needs this
package installed in the same environment; results travel through the cache, not Ray.

A Ray task gets the cell, the workspace (through Ray's object store, once per dataset) and
the original model's folder; it declares its CPUs (and a GPU when the compute is CUDA).
Retrains are tasks of their own, run before the cells that need them, so runs of the same
request do not all wait on one retrain. A worker killed mid-cell leaves only a temporary
folder that the next build sweeps; Ray retries the task (`max_retries`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ..compute import Compute, current
from ..errors import CureError, SettingsError
from ..progress import ProgressFn
from ..workspace import Workspace

EXECUTORS = ("local", "ray")


@dataclass
class CellJob:
    """One cell and where it runs: the dataset and the model its deletion request is made against."""
    ws: Workspace
    original: object  # Recommender (saved: Ray workers load it from its folder)
    cell: object  # grid.Cell
    study: object  # grid.StudyConfig


RunCell = Callable[[Workspace, object, object, object, ProgressFn], dict]


@dataclass
class LocalExecutor:
    """Cells one after another in this process, each in the cache's job queue like any other build."""
    name: str = "local"
    seconds_per_cell: list[float] = field(default_factory=list)  # wall time per cell, for overhead figures

    def run(self, jobs: list[CellJob], run_cell: RunCell, progress: ProgressFn, on_done: Callable[[], None]):
        out = []
        for job in jobs:
            start = time.perf_counter()
            out.append(run_cell(job.ws, job.original, job.cell, job.study, progress))
            self.seconds_per_cell.append(time.perf_counter() - start)
            on_done()
        return out


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise SettingsError("--executor ray needs the ray package (pip install ray)") from exc
    return ray


# --- what a Ray worker runs ----------------------------------------------------------------------
_models: dict[tuple[str, Compute], object] = {}  # per worker process: (model folder, compute) -> Recommender


def _worker_model(ws: Workspace, path: str):
    from ..model.recommender import load_recommender

    key = (path, current())
    if key not in _models:
        _models[key] = load_recommender(path, ws.data)
    return _models[key]


def _in_worker(compute: Compute, threads: int, body):
    from ..jobs import scheduled_elsewhere

    with compute.active(), scheduled_elsewhere(threads):
        return body()


def retrain_task(ws: Workspace, model_dir: str, request: str, seed: int, compute: Compute, threads: int) -> str:
    from ..unlearn.lab import retrain_for

    def body():
        original = _worker_model(ws, model_dir)
        model, _ = retrain_for(ws, original, ws.forget_set(request, seed=seed))
        return str(model.path)
    return _in_worker(compute, threads, body)


def cell_task(ws: Workspace, model_dir: str, cell, study, run_cell: RunCell, compute: Compute, threads: int) -> dict:
    def body():
        return run_cell(ws, _worker_model(ws, model_dir), cell, study, lambda *a: None)
    return _in_worker(compute, threads, body)


@dataclass
class RayExecutor:
    """Cells as Ray tasks. `address`: an existing cluster ("auto", "ray://host:10001"); None starts a
    local instance with `num_cpus`. Each task declares `cpus_per_cell` CPUs (torch uses as many
    threads) and, when the compute is CUDA, one GPU."""
    address: str | None = None
    num_cpus: int | None = None
    cpus_per_cell: int = 1
    max_retries: int = 2
    name: str = "ray"
    seconds_per_cell: list[float] = field(default_factory=list)

    def _start(self):
        ray = _import_ray()
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(num_cpus=self.num_cpus, log_to_driver=False, include_dashboard=False)
            except Exception as exc:  # ConnectionError, RuntimeError, ...: one line, not a traceback
                raise SettingsError(f"cannot start or reach Ray ({self.address or 'local instance'}): {exc}") from exc
        return ray

    def _remote(self, ray, fn, compute: Compute):
        gpus = 1 if compute.device.startswith("cuda") else 0
        return ray.remote(num_cpus=self.cpus_per_cell, num_gpus=gpus, max_retries=self.max_retries,
                          retry_exceptions=False)(fn)

    def run(self, jobs: list[CellJob], run_cell: RunCell, progress: ProgressFn, on_done: Callable[[], None]):
        if not jobs:
            return []
        ray = self._start()
        compute = current()
        if compute.device.startswith("cuda"):  # Ray gives each task its own GPU, seen as cuda:0
            compute = replace(compute, device="cuda:0")
        refs: dict[int, object] = {}  # id(ws) -> object ref, so each dataset is shipped once
        for job in jobs:
            refs.setdefault(id(job.ws), ray.put(job.ws))
        retrain = self._remote(ray, retrain_task, compute)
        needed = {(id(j.ws), str(j.original.path), j.cell.request, j.cell.seed) for j in jobs}
        progress("retrains", 0, len(needed))
        self._wait(ray, [retrain.remote(refs[w], path, request, seed, compute, self.cpus_per_cell)
                         for w, path, request, seed in needed], lambda done: progress("retrains", done, len(needed)))
        task = self._remote(ray, cell_task, compute)
        started = time.perf_counter()
        pending = [task.remote(refs[id(j.ws)], str(j.original.path), j.cell, j.study, run_cell, compute,
                               self.cpus_per_cell) for j in jobs]
        results = self._wait(ray, pending, lambda done: on_done())
        self.seconds_per_cell.append((time.perf_counter() - started) / len(jobs))
        return results

    @staticmethod
    def _wait(ray, refs: list, on_each: Callable[[int], None]) -> list:
        """Results in submission order; `on_each(done)` as each finishes; a task's CureError re-raised as is."""
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                results[index[ready[0]]] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, CureError):
                    raise cause from None
                raise
            done += 1
            on_each(done)
        return results


def make_executor(name: str = "local", address: str | None = None, num_cpus: int | None = None,
                  cpus_per_cell: int = 1):
    if name == "local":
        if address:
            raise SettingsError("--address is for --executor ray")
        return LocalExecutor()
    if name == "ray":
        if cpus_per_cell < 1:
            raise SettingsError(f"--cpus-per-cell must be at least 1, got {cpus_per_cell}")
        return RayExecutor(address=address, num_cpus=num_cpus, cpus_per_cell=cpus_per_cell)
    raise SettingsError(f"unknown executor {name!r}; use {', '.join(EXECUTORS)}")
