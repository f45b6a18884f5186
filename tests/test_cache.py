"""The content-addressed cache (analysis/cache.py)."""
from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from analysis.cache import (
    MANIFEST,
    build_or_load,
    cache_root,
    config_key,
    read_json,
    verify,
    write_json_atomic,
)
from analysis.errors import CacheError

KIND = "thing"


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class Builder:
    """A build function that counts its calls and writes two files."""

    def __init__(self, payload: str = "hello", delay: float = 0.0):
        self.calls = 0
        self.payload = payload
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, out: Path) -> None:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        (out / "a.txt").write_text(self.payload)
        (out / "sub").mkdir()
        (out / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4)


# ---------------------------------------------------------------- keys


def test_config_key_stable_across_dict_order():
    a = {"model": {"d": 32, "layers": 2}, "seed": 0, "data": "ml-100k"}
    b = {"data": "ml-100k", "seed": 0, "model": {"layers": 2, "d": 32}}
    assert config_key(a) == config_key(b)
    assert len(config_key(a)) == 16 and all(c in "0123456789abcdef" for c in config_key(a))
    assert config_key(a) == config_key(json.loads(json.dumps(a)))  # a fresh copy, same key


def test_config_key_differs_for_different_configs():
    base = {"model": {"d": 32, "layers": 2}, "seed": 0}
    keys = {
        config_key(base),
        config_key({"model": {"d": 32, "layers": 3}, "seed": 0}),
        config_key({"model": {"d": 32, "layers": 2}, "seed": 1}),
        config_key({"model": {"d": 32, "layers": 2}, "seed": "0"}),
        config_key({"model": {"d": 32, "layers": 2}}),
        config_key({"model": {"d": 32, "layers": 2}, "seed": 0, "extra": None}),
    }
    assert len(keys) == 6


def test_config_key_accepts_non_json_values():
    assert config_key({"path": Path("/x")}) == config_key({"path": Path("/x")})
    assert config_key({"path": Path("/x")}) != config_key({"path": Path("/y")})


def test_cache_root_explicit_and_env(tmp_path, monkeypatch):
    assert cache_root(tmp_path / "r") == tmp_path / "r" and (tmp_path / "r").is_dir()
    monkeypatch.setenv("CURE_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env" and (tmp_path / "env").is_dir()


# ---------------------------------------------------------------- build once, then load


def test_build_once_then_load(tmp_path):
    build = Builder()
    first = build_or_load(tmp_path, KIND, "k1", build)
    assert first == tmp_path / KIND / "k1"
    assert build.calls == 1
    assert (first / "a.txt").read_text() == "hello"
    assert (first / MANIFEST).is_file()
    manifest = read_json(first / MANIFEST)
    assert set(manifest["files"]) == {"a.txt", "sub/b.bin"}
    verify(first)

    events: list[str] = []
    second = build_or_load(tmp_path, KIND, "k1", build, on_event=events.append)
    assert second == first
    assert build.calls == 1, "a valid artefact is loaded, not rebuilt"
    assert events == []
    # a different key is a different artefact
    build_or_load(tmp_path, KIND, "k2", build)
    assert build.calls == 2
    assert not list((tmp_path / KIND).glob(".tmp-*"))


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_in_build_leaves_nothing(tmp_path, exc_type):
    def build(out: Path) -> None:
        (out / "partial.txt").write_text("half")
        raise exc_type("boom")

    with pytest.raises(exc_type, match="boom"):
        build_or_load(tmp_path, KIND, "k", build)
    assert not (tmp_path / KIND / "k").exists()
    assert list((tmp_path / KIND).iterdir()) == [], "no temporary directory left behind"
    assert not (tmp_path / "quarantine").exists()
    # and a later build succeeds normally
    good = Builder()
    path = build_or_load(tmp_path, KIND, "k", good)
    assert good.calls == 1 and (path / "a.txt").read_text() == "hello"


def test_exception_in_build_keeps_other_artefacts(tmp_path):
    build_or_load(tmp_path, KIND, "keep", Builder("kept"))
    before = all_files(tmp_path / KIND)

    def bad(out: Path) -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError):
        build_or_load(tmp_path, KIND, "other", bad)
    assert all_files(tmp_path / KIND) == before


# ---------------------------------------------------------------- corruption -> quarantine + rebuild


def corrupt_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[17] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,message", [
    (lambda d: corrupt_byte(d / "sub" / "b.bin"), "checksum"),
    (lambda d: (d / "a.txt").write_text("hellO"), "checksum"),
    (lambda d: (d / MANIFEST).unlink(), "manifest"),
    (lambda d: (d / "a.txt").unlink(), "missing"),
    (lambda d: (d / MANIFEST).write_text("{not json"), "JSON"),
])
def test_damage_is_quarantined_and_rebuilt(tmp_path, damage, message):
    build = Builder()
    path = build_or_load(tmp_path, KIND, "k", build)
    damage(path)
    damaged_files = {p: (path / p).read_bytes() for p in all_files(path)}
    with pytest.raises(CacheError):
        verify(path)

    events: list[str] = []
    again = build_or_load(tmp_path, KIND, "k", build, on_event=events.append)
    assert again == path
    assert build.calls == 2, "the damaged artefact is rebuilt"
    verify(again)
    assert (again / "a.txt").read_text() == "hello"
    assert len(events) == 1 and message in events[0] and "quarantine" in events[0]

    # moved aside, not deleted: the damaged copy is intact under root/quarantine
    moved = list((tmp_path / "quarantine").iterdir())
    assert len(moved) == 1 and moved[0].is_dir()
    assert {p: (moved[0] / p).read_bytes() for p in all_files(moved[0])} == damaged_files
    assert not list((tmp_path / KIND).glob(".tmp-*"))

    # the rebuilt artefact is trusted from now on
    build_or_load(tmp_path, KIND, "k", build)
    assert build.calls == 2


def test_repeated_damage_keeps_every_quarantined_copy(tmp_path):
    build = Builder()
    for _ in range(3):
        path = build_or_load(tmp_path, KIND, "k", build)
        corrupt_byte(path / "sub" / "b.bin")
    build_or_load(tmp_path, KIND, "k", build)
    assert build.calls == 4
    assert len(list((tmp_path / "quarantine").iterdir())) == 3


# ---------------------------------------------------------------- write_json_atomic


def test_write_json_atomic_leaves_no_temp_files(tmp_path):
    target = tmp_path / "deep" / "x.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2, {"c": None}]})
    assert read_json(target) == {"a": [1, 2, {"c": None}], "b": 1}
    write_json_atomic(target, {"v": 2, "p": Path("/tmp")})  # overwrite; non-JSON values via str
    assert read_json(target) == {"v": 2, "p": "/tmp"}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_write_json_atomic_failure_keeps_old_file(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"old": True})
    with pytest.raises(TypeError):
        write_json_atomic(target, {(1, 2): "tuple keys are not JSON"})
    assert read_json(target) == {"old": True}


def test_write_json_atomic_failure_leaves_no_temp_file(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(TypeError):
        write_json_atomic(target, {(1, 2): "tuple keys are not JSON"})
    assert list(tmp_path.iterdir()) == []


def test_read_json_errors(tmp_path):
    with pytest.raises(CacheError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CacheError, match="bad.json"):
        read_json(tmp_path / "bad.json")


# ---------------------------------------------------------------- concurrency


def test_concurrent_threads_build_once(tmp_path):
    build = Builder(delay=0.3)
    barrier = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(build_or_load(tmp_path, KIND, "shared", build))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert build.calls == 1
    assert len(results) == 4 and len(set(results)) == 1
    verify(results[0])
    assert not list((tmp_path / KIND).glob(".tmp-*"))


def _process_build(out: Path) -> None:
    marker_dir = out.parent.parent / "markers"
    marker_dir.mkdir(exist_ok=True)
    (marker_dir / f"{multiprocessing.current_process().pid}-{time.time_ns()}").write_text("built")
    time.sleep(0.4)
    (out / "data.txt").write_text("from a process")


def _process_worker(root: str, start, results) -> None:
    start.wait()
    results.put(str(build_or_load(Path(root), KIND, "shared", _process_build)))


def test_concurrent_processes_build_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(str(tmp_path), start, results)) for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    paths = {results.get(timeout=5) for _ in procs}
    assert paths == {str(tmp_path / KIND / "shared")}
    assert len(list((tmp_path / "markers").iterdir())) == 1, "built exactly once"
    verify(tmp_path / KIND / "shared")
    assert (tmp_path / KIND / "shared" / "data.txt").read_text() == "from a process"


def test_a_lock_held_by_another_run_is_reported_before_waiting(tmp_path):
    """A second builder of the same artefact is told it waits (the app shows it), then loads the result."""
    import threading

    from analysis.cache import build_or_load, key_lock

    messages: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def hold():
        with key_lock(tmp_path, "models", "abc"):
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)

    def waiting(msg):
        messages.append(msg)
        release.set()  # the holder finishes once we have said we wait

    path = build_or_load(tmp_path, "models", "abc", lambda tmp: (tmp / "x.json").write_text("{}"), on_wait=waiting)
    t.join()
    assert messages and messages[0].startswith("waiting for another run that is building this model")
    assert (path / "x.json").is_file()


def _half_build(out: Path) -> None:
    (out / "half.txt").write_text("half written")
    time.sleep(120)


def _killed_worker(root: str) -> None:
    build_or_load(Path(root), KIND, "killed", _half_build)


def test_a_build_killed_midway_leaves_nothing_the_next_build_keeps(tmp_path):
    """kill -9 during a build: no entry appears; the next build sweeps the dead one's temp folder and
    builds; a temp folder of a live process (another build in progress) is left alone."""
    import os

    proc = multiprocessing.get_context("fork").Process(target=_killed_worker, args=(str(tmp_path),))
    proc.start()
    deadline = time.time() + 60
    while not list((tmp_path / KIND).glob(".tmp-killed-*/half.txt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.join(timeout=30)
    assert list((tmp_path / KIND).glob(".tmp-killed-*")) and not (tmp_path / KIND / "killed").exists()
    live = tmp_path / KIND / f".tmp-other-{os.getpid()}-abcdef"
    live.mkdir()
    path = build_or_load(tmp_path, KIND, "killed", Builder())
    assert not list((tmp_path / KIND).glob(".tmp-killed-*")) and live.is_dir()
    assert (path / "a.txt").read_text() == "hello" and not (path / "half.txt").exists()
    verify(path)
