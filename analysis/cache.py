"""Content-addressed cache under `cache/`.

Every artefact lives at `<root>/<kind>/<key>/` where key is a hash of the full
configuration that produced it. A directory is written under a temporary name and
renamed into place only when complete, with a manifest of file checksums written
last; so a killed run never leaves a half-written artefact that is later trusted,
and a corrupted one is detected, moved aside to `<root>/quarantine/`, and rebuilt.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import CacheError
from .jobs import WAIT_POLL_SECONDS, WAIT_TELL_SECONDS, JobQueue, pid_alive  # the queue sits below the cache

MANIFEST = "manifest.json"
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "cache"


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: explicit argument, else $CURE_CACHE, else ./cache of the checkout."""
    path = Path(root) if root is not None else Path(os.environ.get("CURE_CACHE", DEFAULT_ROOT))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_key(config: Any) -> str:
    """Stable 16-hex-digit key of a JSON-serialisable configuration.

    A precision other than float32 (compute.py) enters every key, since it changes results; in
    float32 nothing is added, so keys made before devices and dtypes existed stay valid."""
    from .compute import current

    extra = current().key_part()
    if extra and isinstance(config, dict):
        config = {**config, "compute": extra}
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a sibling temp file, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: cannot read JSON ({exc})") from exc


def write_manifest(directory: Path) -> None:
    files = {
        str(p.relative_to(directory)): _sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    write_json_atomic(directory / MANIFEST, {"files": files, "written": time.time()})


def verify(directory: Path) -> None:
    """Raise CacheError unless every file listed in the manifest is present and intact."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise CacheError(f"{directory}: no {MANIFEST}; the artefact is incomplete")
    files = read_json(manifest).get("files", {})
    for rel, digest in files.items():
        p = directory / rel
        if not p.is_file():
            raise CacheError(f"{p}: listed in the manifest but missing")
        if _sha256(p) != digest:
            raise CacheError(f"{p}: checksum mismatch; the file was modified or corrupted")


def quarantine(directory: Path, root: Path) -> Path:
    """Move a bad artefact aside (never delete: nothing is lost) and return where it went."""
    dest = root / "quarantine" / f"{directory.parent.name}-{directory.name}-{int(time.time())}-{uuid.uuid4().hex[:6]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(directory), dest)
    return dest


WAITERS = "waiters"  # under locks/: one marker file per requester waiting on another's identical build


@contextlib.contextmanager
def key_lock(root: Path, kind: str, key: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Exclusive lock per artefact so concurrent runs build it once and never clobber it.

    When another process holds it, `on_wait` is told so before this one waits (a session
    waiting on another's retrain shows that, not a bar stuck at 0), and again every few seconds,
    so a caller can stop waiting by raising from it. While it waits, a marker file says someone
    wants this artefact (`waiters`): a job whose own session has gone runs on only while one exists."""
    lock_dir = root / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{kind}-{key}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait_as_a_known_waiter(fh, lock_dir, kind, key, on_wait)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _wait_as_a_known_waiter(fh, lock_dir: Path, kind: str, key: str, on_wait: Callable[[str], None] | None) -> None:
    """Poll the lock (not a blocking flock: that could not be left when the waiter's session goes)."""
    marker = lock_dir / WAITERS / f"{kind}-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    marker.parent.mkdir(exist_ok=True)
    marker.touch()
    message = f"waiting for another run that is building this {kind.rstrip('s')} ({key[:8]})"
    told_at = None
    try:
        while True:
            if on_wait and (told_at is None or time.monotonic() - told_at >= WAIT_TELL_SECONDS):
                on_wait(message)
                told_at = time.monotonic()
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(WAIT_POLL_SECONDS)
    finally:
        marker.unlink(missing_ok=True)


def waiters(root: Path, kind: str, key: str) -> int:
    """How many live requesters (in any process) wait for this artefact; markers of dead processes are swept."""
    live = 0
    for marker in (Path(root) / "locks" / WAITERS).glob(f"{kind}-{key}-*"):
        pid = marker.name[len(f"{kind}-{key}-"):].split("-")[0]
        if pid.isdigit() and pid_alive(int(pid)):
            live += 1
        else:
            marker.unlink(missing_ok=True)
    return live


class _Building:
    """The artefacts this thread is building now (outermost first). Kept on the thread object, like
    jobs._Held, so a module reload in a running server does not forget them."""

    @property
    def stack(self) -> list[tuple[Path, str, str]]:
        thread = threading.current_thread()
        if not hasattr(thread, "_cure_building"):
            thread._cure_building = []
        return thread._cure_building


_building = _Building()


def someone_waits_for_this_thread() -> bool:
    """True when another requester waits for an artefact this thread is building (see watched.py)."""
    return any(waiters(*entry) for entry in _building.stack)


def artefact_dir(root: Path, kind: str, key: str) -> Path:
    return root / kind / key


def dead_tmp_folders(folder: Path) -> list[Path]:
    """The temporary build folders (`.tmp-<key>-<pid>-<id>`) in `folder` whose process no longer exists."""
    dead = []
    for tmp in Path(folder).glob(".tmp-*"):
        parts = tmp.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and not pid_alive(int(parts[1])):
            dead.append(tmp)
    return dead


def sweep_stale_tmp(folder: Path) -> list[Path]:
    """Remove the temporary build folders of processes that no longer exist.

    A build that raises removes its own; one killed (SIGKILL, or SIGTERM, which Python does not turn
    into an exception) cannot: measured after two killed studies, their half-built runs stayed in
    cache/runs/. A folder whose process is alive is another build in progress and is left alone.
    """
    removed = dead_tmp_folders(folder)
    for tmp in removed:
        shutil.rmtree(tmp, ignore_errors=True)
    return removed


def _intact(final: Path) -> bool:
    if not final.exists():
        return False
    try:
        verify(final)
    except CacheError:
        return False  # quarantined and rebuilt under the lock
    return True


def _wait_for_identical(root: Path, kind: str, key: str, on_wait: Callable[[str], None] | None) -> None:
    """If another job is building this very artefact, wait for it (holding no queue slot), say so, and be
    counted as its waiter."""
    with key_lock(root, kind, key, on_wait):
        pass


def build_or_load(
    root: Path,
    kind: str,
    key: str,
    build: Callable[[Path], None],
    on_event: Callable[[str], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    queued: bool = True,
) -> Path:
    """Return `<root>/<kind>/<key>`, building it with `build(tmp_dir)` if absent or corrupt.

    `build` writes into a fresh temporary directory; only after it returns (and the
    manifest is written) is the directory renamed into place. An exception inside
    `build` leaves the cache exactly as it was.

    A build runs in a slot of the cache's job queue (`jobs.JobQueue`; `queued=False` for work
    that is not compute, like a download). Identical jobs are merged: a second requester waits
    for the first one's result without taking a slot. The artefact lock is only ever taken while
    holding a slot, so whoever holds it is running, and waiting on it cannot deadlock the queue.
    """
    final = artefact_dir(root, kind, key)
    if _intact(final):
        return final
    _wait_for_identical(root, kind, key, on_wait)
    if _intact(final):
        return final
    slot = JobQueue(root).slot(f"{kind.rstrip('s')} {key[:8]}", on_wait) if queued else contextlib.nullcontext()
    with slot as job, key_lock(root, kind, key, on_wait):
        if final.exists():
            try:
                verify(final)
                if job is not None:
                    job.found_built = True
                return final
            except CacheError as exc:
                moved = quarantine(final, root)
                if on_event:
                    on_event(f"{exc}; moved to {moved} and rebuilding")
        sweep_stale_tmp(root / kind)
        tmp = root / kind / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir(parents=True)
        _building.stack.append((root, kind, key))
        try:
            build(tmp)
            write_manifest(tmp)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            _building.stack.pop()
    return final
