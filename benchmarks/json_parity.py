"""Are two benchmark JSONs equal, apart from wall times? For behaviour-preserving changes: run a benchmark on
the code before and after (each on a fresh cache, so nothing is read back from the other run) and compare.
Run both sides on the same machine: bench_nodes' users:0.1 JSON recorded in an earlier session differed from
this machine's in 70 of 317 values (retain-side importances, ~1e-5 relative), while the code before and after
a change agreed to 1e-9 when both ran here (issue 27).

Numbers compare to a relative and absolute tolerance (the default 1e-9 is equality up to float printing);
keys naming time (seconds, wall, *_s) and machine facts are skipped; a key on one side only is a difference.
Prints each difference (path, before, after) and a summary line; exits 1 when any number or value differs.

    .venv/bin/python benchmarks/json_parity.py before.json after.json [--tol 1e-9]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

SKIPPED = ("seconds", "wall", "machine", "model_dir", "run_dir", "stage_seconds", "retrain_dir", "original_dir")


def _skipped(key: str) -> bool:
    return any(part in key for part in SKIPPED) or key.endswith("_s")


def differences(a, b, tol: float, path: str = "") -> tuple[list[tuple[str, object, object]], int]:
    """(path, before, after) of every difference, and how many leaves were compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        out, n = [], 0
        for key in sorted(set(a) | set(b)):
            if _skipped(str(key)):
                continue
            if key not in a or key not in b:
                out.append((f"{path}/{key}", a.get(key, "<missing>"), b.get(key, "<missing>")))
                continue
            d, k = differences(a[key], b[key], tol, f"{path}/{key}")
            out, n = out + d, n + k
        return out, n
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(f"{path}/len", len(a), len(b))], 1
        out, n = [], 0
        for i, (x, y) in enumerate(zip(a, b)):
            d, k = differences(x, y, tol, f"{path}/{i}")
            out, n = out + d, n + k
        return out, n
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=tol, abs_tol=tol)
        return ([] if same else [(path, a, b)]), 1
    return ([] if a == b else [(path, a, b)]), 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tol", type=float, default=1e-9)
    args = parser.parse_args()
    diffs, compared = differences(json.loads(args.before.read_text()), json.loads(args.after.read_text()), args.tol)
    for path, x, y in diffs:
        print(f"{path}: {x!r} -> {y!r}")
    print(f"{compared} values compared (wall times skipped), {len(diffs)} differ (tolerance {args.tol:g})")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
