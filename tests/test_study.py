"""The evidence study on a tiny grid: every section, the report files, and resuming without recomputing."""
from __future__ import annotations

import json

from dataclasses import replace

import pytest

import analysis.unlearn.lab as lab
from analysis.circuits.discover import CircuitSettings
from analysis.config import DataConfig
from analysis.data.samples import build_interactions
from analysis.model.train import train_recommender
from analysis.study import run_and_report
from analysis.study.grid import StudyConfig, summarise
from analysis.study.report import figures
from analysis.study.result import StudyResult, list_reports, study_noise
from analysis.workspace import Workspace
from support.datasets import subset
from tests.conftest import TINY_MODEL, TINY_TRAIN

TINY_STUDY = StudyConfig(seeds=(0, 1), request="users:0.2", lrs=(0.003,), rates=("users:0.1", "users:0.2"),
                         levels=("users:0.2", "interactions:0.1", "genre:Drama"), steps=2,
                         circuits=CircuitSettings(n_prompts=8, stability_seeds=2, batch_size=8, ig_steps=2))


def _same(a, b) -> bool:
    """Equal as JSON (tuples and lists alike, NaN equal to NaN): what a record writes and reads back."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def tiny_rec_auc(result) -> float:
    """The original's test AUC as each stored run recorded it (one model, so one value; the reverse transfer's
    runs are made against the other dataset's model, the training-noise runs against a reseeded one)."""
    values = {round(r["original_auc_test"], 12) for r in result.rows
              if r["section"] not in ("transfer_back", "training_seeds")}
    assert len(values) == 1
    return values.pop()


class Stop(Exception):
    pass


@pytest.fixture
def tiny_rec(tiny_ws):
    return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)


@pytest.fixture
def second_ws(latest_small, tiny_ws):
    """40 users of MovieLens latest-small as the second real dataset (half stars, no user attributes),
    in the same cache."""
    data = subset(latest_small, 40)
    data = replace(data, name="latest-small users 1-40",
                   items=data.items[data.items["item_id"].isin(data.ratings["item_id"])].reset_index(drop=True))
    return Workspace(data, build_interactions(data, history=5), DataConfig(history=5), tiny_ws.root)


def test_a_tiny_study_writes_every_section_and_resumes_without_recomputing(tiny_ws, tiny_rec, second_ws,
                                                                           monkeypatch):
    calls = []
    real = lab.unlearn_steps
    monkeypatch.setattr(lab, "unlearn_steps", lambda *a, **k: calls.append(1) or real(*a, **k))

    def stop_after(n):
        def progress(stage, done, total):
            if stage == "study" and done >= n:
                raise Stop
        return progress

    with pytest.raises(Stop):  # killed after 4 cells
        run_and_report(tiny_ws, tiny_rec, TINY_STUDY, stop_after(4), second_ws)
    runs = tiny_ws.root / "runs"
    finished = {p.name: p.stat().st_mtime for p in runs.iterdir() if not p.name.startswith(".")}
    assert len(finished) == 4 and not (tiny_ws.root / "reports").exists()
    computed_first = len(calls)

    path, result = run_and_report(tiny_ws, tiny_rec, TINY_STUDY, transfer=second_ws)
    after = {p.name: p.stat().st_mtime for p in runs.iterdir() if not p.name.startswith(".")}
    assert all(after[name] == mtime for name, mtime in finished.items())  # nothing finished was redone
    unique_runs = {r["run_dir"] for r in result.rows}
    retrain_cells = sum(1 for r in result.rows if r["method"] == "retrain")
    assert len(calls) - computed_first == len(unique_runs) - len(finished) - (retrain_cells - 0)  # retrain: no steps

    calls.clear()
    again, _ = run_and_report(tiny_ws, tiny_rec, TINY_STUDY, transfer=second_ws)
    assert calls == [] and again == path

    # every section is there
    assert {s["method"] for s in result.pareto} == {"ga", "graddiff", "npo", "kl", "pcgrad", "salun", "cure",
                                                        "retrain"}
    # the headline: one row per method, at the strength chosen on validation, with the relative columns
    assert {h["method"] for h in result.headline} == {s["method"] for s in result.pareto}
    assert all({"retrain_distance", "gap_closed", "jsd_ratio", "utility_cost", "valid_drop", "chosen_by"} <= set(h)
               for h in result.headline)
    assert all(s["n_seeds"] == 2 for s in result.pareto)
    assert result.compared_methods[0] == "cure" and len(result.compared_methods) == 3
    assert {s["request"] for s in result.rates} == set(TINY_STUDY.rates)
    assert {s["request"] for s in result.levels} == set(TINY_STUDY.levels)
    n_draws = {s["request"]: s["n_seeds"] for s in result.levels}
    assert n_draws == {"users:0.2": 2, "interactions:0.1": 2, "genre:Drama": 1}  # a genre is one set, not a draw
    rep = result.reproducibility
    assert len(rep.prompt_seeds) == 2 and set(rep.deletion_draws) == {
        "forget-specific", "retain-specific", "task-shared", "inactive"}
    assert rep.other_seed.cure_with_other_groups["method"] == "cure"
    # the ablation: every arm on NPO (uniform, PCGrad, SalUn, CURE, CURE with random groups of the same sizes),
    # each at the rule's strength, paired with CURE by draw
    ab = result.ablation
    assert [a["arm"] for a in ab.arms] == ["npo", "npo+pcgrad", "npo+salun", "cure", "cure (random groups)"]
    assert all(a["n_seeds"] == 2 for a in ab.arms) and set(ab.cure_minus) == {
        "npo", "npo+pcgrad", "npo+salun", "cure (random groups)"}
    assert all(d["retrain_distance"]["n_draws"] in (0, 2) for d in ab.cure_minus.values())
    ablation_runs = [r for r in result.rows if r["section"] == "ablation"]
    assert len(ablation_runs) == 6 and len({r["run_dir"] for r in ablation_runs}) == 6
    for r in ablation_runs:  # each ran what its arm says: NPO under PCGrad and SalUn, CURE's groups shuffled
        stored = json.loads((tiny_ws.root / "runs" / r["run_dir"].split("/")[-1] / "run.json").read_text())
        assert stored["config"]["objective"] == "npo" and stored["method"] == r["method"]
        assert (stored["circuits"] or {}).get("random_groups") == (0 if r["method"] == "cure" else None)
    # training noise: the original and each draw's retrain under a second training seed
    noise = result.training_noise
    own = TINY_TRAIN.seed
    assert list(noise.seeds) == [own, own + 1] and len(noise.draws) == 2
    seeded = [r for r in result.rows if r["section"] == "training_seeds"]
    assert {(r["method"], r["seed"], r["training_seed"]) for r in seeded} == {
        (m, s, own + 1) for m in ("retrain", *result.compared_methods) for s in (0, 1)}
    for r in seeded:  # made against the reseeded original, never the study's own
        stored = json.loads((tiny_ws.root / "runs" / r["run_dir"].split("/")[-1] / "run.json").read_text())
        assert stored["original_dir"] != str(tiny_rec.path)
    retrain_auc = {(r["seed"], r["training_seed"]): r["auc_forget"] for r in result.rows
                   if r["method"] == "retrain" and r["section"] in ("pareto", "training_seeds")}
    for d in noise.draws:
        assert len(d.pairs) == 4  # every original seed against every retrain seed
        if d.low is not None:  # the envelope holds every pair's interval
            assert all(d.low <= p.low and p.high <= d.high for p in d.pairs if p.low == p.low)
        original = next(r["original_auc_forget"] for r in result.rows
                        if r["section"] == "pareto" and r["method"] == "retrain" and r["seed"] == d.draw)
        own_retrain, other = retrain_auc[(d.draw, None)], retrain_auc[(d.draw, own + 1)]
        expected = abs(other - own_retrain) / abs(original - own_retrain)  # from the stored runs' own metrics
        assert d.retrain_seed_distance == pytest.approx(expected, rel=1e-6)
        assert d.retrain_spread == pytest.approx(abs(other - own_retrain), abs=1e-9)
    assert [h["pairs"] for h in result.headline_with_training_noise] == [4, 4, 4]
    quoted = study_noise(tiny_ws, tiny_rec, noise.request)  # what the lab says beside its one retrain
    assert _same(quoted.to_json(), noise.to_json())  # read back from the stored report, field for field
    assert f"{noise.retrain_seed_distance:.2f}" in quoted.quote()
    assert study_noise(tiny_ws, tiny_rec, "users:0.5") is None
    assert all(r["mia_auc"] is not None for r in result.rows)
    star = next(t for t in figures(result)["pareto"].data if t.name == "original (do nothing)")
    cure = next(s for s in result.pareto if s["method"] == "cure")
    assert star.y[0] == pytest.approx(cure["original_auc_test"]) and star.y[0] == pytest.approx(tiny_rec_auc(result))
    draws, datasets = result.transfer["across_draws"], result.transfer["across_datasets"]
    assert draws.groups_from == ["draw 1", "draw 0"]  # draw 0 unlearns with draw 1's groups and back
    assert datasets.groups_from == ["latest-small users 1-40 draw 0", "latest-small users 1-40 draw 1"]
    assert datasets.item_rows.startswith("not transferred")
    for sizes in datasets.sizes_here + datasets.sizes_there:  # the split per node kind on each dataset
        assert sum(sizes["head"].values()) == 4 and sum(sizes["embedding"].values()) == 5  # 2 x 2 heads, 5 roles
    for t in (draws, datasets):
        assert 0 <= t.same_groups <= 1 and t.cure_with_transferred_groups["n_seeds"] == 2
    transfer_runs = [r for r in result.rows if r["section"] == "transfer"]
    assert len(transfer_runs) == 4 and all(r["method"] == "cure" for r in transfer_runs)
    for r in transfer_runs:  # each used exactly the groups it says it used
        used = json.loads((tiny_ws.root / "runs" / r["run_dir"].split("/")[-1] / "run.json").read_text())
        assert used["circuits"]["given"]
        if r["groups_from"].startswith("latest-small"):  # no item row of the other dataset came along
            assert not any(m.startswith("row:") for m in used["circuits"]["groups"])
    back = datasets.back  # the reverse: CURE on the other dataset with its own groups, and with ours
    assert back.on == "latest-small users 1-40" and back.groups_from == tiny_ws.data.name
    assert back.cure_with_own_groups["n_seeds"] == 2 and back.cure_with_transferred_groups["n_seeds"] == 2
    back_runs = [r for r in result.rows if r["section"] == "transfer_back"]
    assert len(back_runs) == 4 and {r["groups_from"] for r in back_runs} == {"", f"{tiny_ws.data.name} draw 0",
                                                                             f"{tiny_ws.data.name} draw 1"}
    for r in back_runs:
        used = json.loads((tiny_ws.root / "runs" / r["run_dir"].split("/")[-1] / "run.json").read_text())
        assert bool(used["circuits"].get("given")) == bool(r["groups_from"])
        if r["groups_from"]:
            assert not any(m.startswith("row:") for m in used["circuits"]["groups"])
    # without a second dataset the section says why it is missing
    alone, no_second = run_and_report(tiny_ws, tiny_rec, TINY_STUDY)
    assert alone != path and no_second.transfer["across_datasets"].skipped is not None
    html = (path / "report.html").read_text()
    assert "The same request on both datasets, per node kind" in html and "not transferred" in html
    assert "reverse, on latest-small users 1-40" in html
    for section in ("Pareto", "Rates", "Levels", "Reproducibility", "Privacy", "Transfer", "Reproduce",
                    "Training-seed noise", "does the circuit?"):
        assert section in html
    assert "plotly" in html.lower() and "wall_seconds" in html
    stored = json.loads((path / "study.json").read_text())
    assert stored["meta"]["seeds"] == [0, 1] and stored["meta"]["versions"]["torch"]
    assert _same({k: v for k, v in stored.items() if k != "meta"}, result.to_json())  # what study.json holds
    assert _same(StudyResult.from_json(stored).to_json(), result.to_json())  # and reads back, record for record
    header = (path / "table.csv").read_text().splitlines()[0]
    assert "jsd_forget" in header and "mia_auc" in header
    listed = list_reports(tiny_ws.root)
    assert [r.path for r in listed] == [alone, path]  # newest first
    assert _same(listed[1].result.to_json(), result.to_json())
    assert listed[1].meta.seeds == [0, 1] and "2 seed(s)" in listed[1].label


def test_summaries_give_mean_and_spread_over_seeds():
    rows = [{"method": "cure", "lr": 0.1, "seed": s, "jsd_forget": v, "jsd_test": 0.0, "auc_test": 0.8,
             "auc_forget": 0.7, "mia_auc": 0.5, "seconds": 1.0, "applied_conflict": 0.0, "retrain_mia_auc": 0.5,
             "retrain_auc_test": 0.8} for s, v in enumerate((1.0, 2.0, 3.0))]
    (s,) = summarise(rows, ("method", "lr"))
    assert s["n_seeds"] == 3 and s["jsd_forget"] == pytest.approx(2.0)
    assert s["jsd_forget_std"] == pytest.approx((2 / 3) ** 0.5) and s["auc_test_std"] == pytest.approx(0.0)


def test_the_report_says_when_test_auc_cannot_separate_the_methods():
    from analysis.study.report import _utility_spread

    pareto = [{"method": "cure", "auc_test": 0.8070}, {"method": "npo", "auc_test": 0.8075},
              {"method": "ga", "auc_test": 0.30},  # a collapse is not part of the comparison
              {"method": "retrain", "auc_test": 0.79, "auc_test_std": 0.008}]
    text = _utility_spread(pareto)
    assert "0.8070-0.8075 (0.0005)" in text and "±0.0080" in text
    assert _utility_spread(pareto[:2]) == ""  # no retrain, no reference
