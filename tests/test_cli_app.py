"""The `cure` command line and the minimal app, on a tiny GroupLens folder (written by support/datasets.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.cli import main
from support.datasets import write_ml100k_folder


@pytest.fixture
def tiny_folder(tiny_data, tmp_path) -> Path:
    return write_ml100k_folder(tiny_data, tmp_path / "ml-100k-tiny")


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_prepare_train_evaluate_rank(tiny_folder, tmp_path, capsys):
    common = ["--data", str(tiny_folder), "--history", "5", "--cache", str(tmp_path / "cache")]
    prepared = run_json(capsys, "prepare", *common)
    assert prepared["data"]["users"] == 40 and prepared["split"]["test"] > 0
    trained = run_json(capsys, "train", *common, "--epochs", "1")
    assert Path(trained["model_dir"]).is_dir()
    for key in ("auc", "acc", "logloss"):
        assert 0 <= trained["metrics"]["test"][key] <= 10
    assert trained["train_seconds"] > 0
    evaluated = run_json(capsys, "evaluate", *common, "--epochs", "1")
    assert evaluated["metrics"]["test"] == trained["metrics"]["test"]
    assert 0.5 < evaluated["baselines"]["user_item_bias"]["auc"] <= 1
    ranked = run_json(capsys, "rank", *common, "--epochs", "1", "--user", "3", "--k", "5")
    assert [r["rank"] for r in ranked["items"]] == [1, 2, 3, 4, 5]
    assert all(r["title"] for r in ranked["items"])
    scores = [r["score"] for r in ranked["items"]]
    assert scores == sorted(scores, reverse=True)
    retrain = run_json(capsys, "train", *common, "--epochs", "1", "--forget", "users:3,5")
    assert retrain["model_dir"] != trained["model_dir"] and retrain["forget"]["spec"] == "users:3,5"


@pytest.mark.parametrize("argv, message", [
    (["train", "--forget", "users:abc"], "expected a fraction of users"),
    (["train", "--forget", "genre:Polka"], "unknown genre"),
    (["rank", "--user", "99999"], "unknown user 99999"),
    (["rank", "--user", "3", "--k", "0"], "k must be at least 1"),
])
def test_bad_input_is_a_clear_error(tiny_folder, tmp_path, capsys, argv, message):
    code = main([*argv, "--data", str(tiny_folder), "--history", "5", "--cache", str(tmp_path / "c"),
                 "--epochs", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert message in captured.err


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["prepare", "--data", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_circuits_cli_reports_groups_faithfulness_agreement_and_stability(tiny_folder, tmp_path, capsys):
    common = ["--data", str(tiny_folder), "--history", "5", "--cache", str(tmp_path / "cache"), "--epochs", "1"]
    small = ["--n-prompts", "8", "--stability-seeds", "2", "--retain-samples", "2", "--ig-steps", "2"]
    out = run_json(capsys, "circuits", *common, "--forget", "users:3,5", *small)
    names = {n["name"] for n in out["nodes"]}
    assert {"input", "a0.h0", "m0"} <= names and len(out["edges"]) == out["shape"]["n_edges"]
    groups = {n["group"] for n in out["nodes"] if n["name"] != "input"}
    assert groups <= {"forget-specific", "retain-specific", "task-shared", "inactive"}
    assert {"from", "to", "forget_score", "retain_score"} <= set(out["edges"][0])
    assert {"curve", "at_circuit"} <= set(out["faithfulness"]) and out["faithfulness"]["at_circuit"]["edges"] >= 0
    assert -1 <= out["agreement"]["spearman_vs_patching"] <= 1
    assert set(out["stability"]["jaccard"]) == {"forget-specific", "retain-specific", "task-shared", "inactive"}
    assert out["seconds"] > 0 and out["forget"]["spec"] == "users:3,5"
    # the keys the issue names: kinds, intervals, coverage, group sizes
    kinds = {n["kind"] for n in out["nodes"]}
    assert {"input", "embedding", "head", "mlp", "item-row"} <= kinds
    spec = next(n["specificity"] for n in out["nodes"] if n["name"] == "m0")
    assert spec["low"] <= spec["estimate"] <= spec["high"]
    assert out["coverage"]["forget_grad_share"] == pytest.approx(1.0)
    assert sum(out["groups"].values()) == len(out["nodes"]) - 1
    # issue 23: stability over prompt seeds and retain samples, presence, the tests' adjusted p-values, the null
    assert set(out["stability"]["by_draw"]) == {"prompt seed", "retain sample"}
    row = next(n for n in out["nodes"] if n["kind"] == "item-row")
    assert set(row["presence"]) == {"forget", "retain"} and "q_forget" in row["specificity"]
    assert out["thresholds"]["fdr"] == 0.05 and out["tested"] >= 1 and out["summary"][0]["group"] == "forget-specific"
    null = run_json(capsys, "circuits", *common, "--forget", "users:3,5", *small, "--null")
    assert null["path"] == out["path"] and set(null["null"]["groups_by_kind"]) >= {"head", "item-row"}
    # a floor above every importance: the cached scores relabel everything inactive
    again = run_json(capsys, "circuits", *common, "--forget", "users:3,5", *small, "--floor", "1e9")
    assert {n["group"] for n in again["nodes"] if n["name"] != "input"} == {"inactive"}
    assert again["path"] == out["path"]
    strict = run_json(capsys, "circuits", *common, "--forget", "users:3,5", *small, "--group-rule", "threshold",
                      "--forget-threshold", "1e9", "--retain-threshold", "1e9")
    assert {n["group"] for n in strict["nodes"] if n["name"] != "input"} == {"inactive"}
    assert main(["circuits", *common, "--forget", "users:3,5", "--forget-threshold", "-1", "--json"]) == 2
    assert "threshold" in capsys.readouterr().err


def test_conflict_and_unlearn_cli(tiny_folder, tmp_path, capsys):
    common = ["--data", str(tiny_folder), "--history", "5", "--cache", str(tmp_path / "cache"), "--epochs", "1"]
    conflict = run_json(capsys, "conflict", *common, "--forget", "users:3,5")
    assert len(conflict["heatmap"]["cos"]) == 4 and len(conflict["heatmap"]["cos"][0]) == 5  # 4 layers x (4 heads + MLP)
    assert 0 <= conflict["negative_share"] <= 1
    small = ["--n-prompts", "8", "--stability-seeds", "1", "--ig-steps", "2", "--steps", "2", "--batch-size", "8"]
    run = run_json(capsys, "unlearn", *common, "--forget", "users:3,5", "--method", "cure", *small)
    assert run["method"] == "cure" and Path(run["run_dir"]).is_dir()
    for key in ("jsd_forget", "jsd_test", "auc_test", "auc_forget", "mia_auc"):
        assert key in run["metrics"] and key in run["retrain"] and key in run["original"]
    for when in ("before", "after", "applied"):
        assert 0 <= run["conflict"][when]["negative_share"] <= 1
    assert run["seconds"] > 0 and run["retrain_seconds"] > 0
    # the verdict: retrain distance beside signed gap closed, the matched attack with intervals, unseen samples
    m = run["metrics"]  # the CLI prints run.json: the yardstick's numbers once, under "yardstick"
    y = run["yardstick"]
    assert "retrain_distance" in y and set(y["gap_closed"]) == {"auc_forget", "logloss_forget", "mia_auc"}
    assert "retrain_distance" not in m and "gap_closed" not in m
    assert {"run", "original", "retrain", "interval"} <= set(m["mia_never_seen"])
    assert set(m["forget_unseen"]["auc"]) == {"run", "original", "retrain"} and m["forget_unseen"]["n"] > 0
    assert {u["user"] for u in run["per_user"]} == {3, 5}
    assert all(0 <= u[k] <= 1 for u in run["per_user"] for k in ("before", "after", "retrain"))
    auto = run_json(capsys, "unlearn", *common, "--forget", "users:3,5", "--method", "cure", *small,
                    "--strength", "auto", "--strengths", "1e-4,1e-3", "--random-groups", "0")
    assert auto["strength_choice"]["strength"] in (1e-4, 1e-3) and len(auto["strength_choice"]["points"]) == 2
    assert auto["config"]["lr"] == auto["strength_choice"]["strength"] and auto["config"]["random_groups"] == 0
    assert auto["circuits"]["random_groups"] == 0
    assert main(["unlearn", *common, "--forget", "users:3,5", "--method", "npo", "--strength", "auto",
                 "--strengths", "fast", "--json"]) == 2
    assert "--strengths 'fast'" in capsys.readouterr().err
    assert main(["unlearn", *common, "--forget", "users:3,5", "--method", "selective", "--modules", "a9.h9",
                 *small, "--json"]) == 2
    assert "unknown modules" in capsys.readouterr().err


def test_warm_prepares_a_request_and_the_cli_prints_its_stages(tmp_path, tiny_data, monkeypatch):
    """`cure warm` (run by `make app`): retrain, circuits and reference views of a request, stage by stage."""
    import json
    import subprocess
    import sys

    folder = write_ml100k_folder(tiny_data, tmp_path / "ml")
    # the app's circuit settings as the app tests set them: warm prepares what the app will ask for
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent.parent), "CURE_N_PROMPTS": "8",
           "CURE_STABILITY_SEEDS": "2", "CURE_RETAIN_SAMPLES": "2"}
    base = [sys.executable, "-m", "analysis.cli"]
    common = ["--data", str(folder), "--history", "5", "--cache", str(tmp_path / "cache"), "--json"]
    out = subprocess.run(base + ["warm", "--forget", "users:0.2"] + common, capture_output=True, text=True, env=env,
                         timeout=1200)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert sum(result["groups"].values()) > 0 and Path(result["circuits"]).is_dir()
    stored = json.loads((Path(result["circuits"]) / "circuit.json").read_text())["settings"]
    assert (stored["n_prompts"], stored["stability_seeds"], stored["retain_samples"]) == (8, 2, 2)  # the env's
    assert "[1/3] retrain" in out.stderr and "[3/3] reference views" in out.stderr
    again = subprocess.run(base + ["warm", "--forget", "users:0.2"] + common, capture_output=True, text=True, env=env,
                           timeout=600)
    assert again.returncode == 0 and "from cache: retrain, circuits" in again.stderr, again.stderr
    assert (tmp_path / "cache" / "timings.json").is_file()
