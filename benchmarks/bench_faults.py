"""Fault injection: kill -9 trainings, circuit discoveries and unlearning runs at random points.

After every kill the cache is audited: every stored entry must verify against its manifest
(no partial or corrupted entry), and the rerun of the killed command must finish and leave no
temporary folder of a dead process behind. The original model's bytes are checksummed before and
after. Then a checkpoint, a circuit file and a run file are each corrupted: the next call must
quarantine the bad entry and rebuild it. Prints a table and writes JSON to
benchmarks/results/faults.json. The harness is support/faults.py; `tests/test_faults.py` runs the same
harness with one kill per job.

    .venv/bin/python benchmarks/bench_faults.py [--kills-per-job 10]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills-per-job", type=int, default=10)
    parser.add_argument("--users", type=int, default=40)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from analysis.cache import cache_root
    from analysis.data.loaders import load_dataset
    from support.datasets import subset, write_ml100k_folder
    from support.faults import run_faults

    with tempfile.TemporaryDirectory() as tmp:
        data = write_ml100k_folder(subset(load_dataset(None, root=cache_root()), args.users), Path(tmp) / "data")
        result = run_faults(data, Path(tmp) / "cache", args.kills_per_job)
    print(f"{'job':<9} {'kills':>6} {'killed':>7} {'partial':>8} {'reruns ok':>10} {'dead tmp left':>14}")
    for job in ("train", "circuits", "unlearn"):
        rows = [k for k in result["kills"] if k["job"] == job]
        print(f"{job:<9} {len(rows):>6} {sum(k['killed'] for k in rows):>7} "
              f"{sum(k['partial_entries'] for k in rows):>8} {sum(k['rerun_ok'] for k in rows):>10} "
              f"{sum(k['dead_tmp_after_rerun'] for k in rows):>14}")
    for c in result["corruptions"]:
        print(f"corrupted {c['file']:<18} quarantined {c['quarantined']}  rebuilt ok {c['rerun_ok']}")
    print(f"original model bytes unchanged: {result['original_unchanged']}; {result['seconds']:.0f} s")
    out = Path(__file__).parent / "results" / "faults.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "kills"}))


if __name__ == "__main__":
    main()
