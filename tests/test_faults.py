"""Fault injection (subprocess, kill -9 at random points): the harness of support/faults.py (which
benchmarks/bench_faults.py runs), one kill per job kind here (the benchmark does 30+). Also each corrupted
artefact kind is quarantined and rebuilt, and the original model's bytes never change."""
from __future__ import annotations

from support.datasets import write_ml100k_folder
from support.faults import run_faults


def test_kill_9_leaves_no_partial_entry_and_corruption_is_quarantined(tiny_data, tmp_path):
    data = write_ml100k_folder(tiny_data, tmp_path / "data")
    result = run_faults(data, tmp_path / "cache", kills_per_job=1, seed=1, log=lambda *_: None)
    assert result["original_unchanged"]
    assert result["partial_entries"] == 0 and result["failed_reruns"] == 0 and result["dead_tmp_left"] == 0
    assert result["n_killed"] >= 1, result["kills"]  # at least one kill landed before the command finished
    for c in result["corruptions"]:
        assert c["rerun_ok"] and c["quarantined"] >= 1, c
