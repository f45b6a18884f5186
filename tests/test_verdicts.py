"""Verdicts you can trust: retrain distance and the rankings, never-seen users, the matched attack, the
retrain-free strength rule and CURE with random groups."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analysis.circuits.groups import Group
from analysis.circuits.nodes import graph_table
from analysis.config import DataConfig
from analysis.data.forget import retained_training
from analysis.data.samples import TEST, Interactions, build_interactions
from analysis.model.sequences import PromptBuilder
from analysis.model.train import train_recommender
from analysis.pareto import rank_runs
from analysis.study.grid import (METHODS, SWEPT_ARMS, StudyConfig, _picked_cells, _sweep_cells, chosen_by_attack,
                                 strongest_baselines)
from analysis.study.summary import Chosen, ablation, at_chosen, chosen_on_draw, summarise
from analysis.study.report import distance_pareto_figure
from analysis.unlearn.ablation import random_groups
from analysis.metrics import auc
from analysis.unlearn.attack import AttackResult, ResampledAuc, attack_rows, matched_attack
from analysis.unlearn.methods import UnlearningMethod
from analysis.data.forget import ForgetSummary
from analysis.unlearn.record import Comparison, ModelMetrics, RunRecord, Trio
from analysis.unlearn.run import UnlearnConfig
from analysis.unlearn.strength import StrengthPoint, choose_strength, strength_sweep
from analysis.unlearn.yardstick import retrain_distance, yardstick
from analysis.workspace import Workspace
from support.datasets import subset
from tests.conftest import TINY_MODEL, TINY_TRAIN
from tests.test_yardstick import _metrics, _scores


# --------------------------------------------------------------- retrain distance and the rankings

def test_retrain_distance_counts_overshooting_like_falling_short():
    assert retrain_distance(0.77, 0.745, 0.745) == 0.0
    assert retrain_distance(0.77, 0.77, 0.745) == pytest.approx(1.0)
    short, over = retrain_distance(0.77, 0.75, 0.745), retrain_distance(0.77, 0.74, 0.745)
    assert short == pytest.approx(0.2) and over == pytest.approx(0.2)
    assert retrain_distance(0.77, 0.70, 0.77) is None  # no gap: nothing to measure against


def test_a_synthetic_over_forgetting_run_never_outranks_a_run_nearer_the_retrain():
    y, original, retrain = _scores()
    rng = np.random.default_rng(3)
    near = 0.9 * retrain + 0.1 * original  # a little short of the retrain
    wiped = 0.2 * retrain + 0.3 * rng.standard_normal(len(y))  # ascent past the retrain: gap closed > 1
    runs = {name: yardstick({"run": s, "retrain": retrain, "original": original}, y, _metrics())
            for name, s in (("near", near), ("over", wiped), ("noop", original))}
    assert runs["over"].gap_closed.auc_forget > runs["near"].gap_closed.auc_forget  # signed: would win
    assert runs["over"].retrain_distance > runs["near"].retrain_distance
    assert runs["noop"].retrain_distance == pytest.approx(1.0)
    names = list(runs)
    order = rank_runs([runs[n].retrain_distance for n in names], [0.0] * 3)
    assert names[order[0]] == "near"
    # ... and it pays the same or more utility: still never first, and a run with no distance ranks last
    order = rank_runs([runs["over"].retrain_distance, runs["near"].retrain_distance, None], [0.004, 0.004, 0.0])
    assert order == [1, 0, 2]

    # the study's choice of the strongest baselines and the Pareto figure agree
    summary = [{"method": "ga", "lr": 1e-3, "retrain_distance": runs["over"].retrain_distance,
                "gap_closed": runs["over"].gap_closed.auc_forget, "utility_cost": 0.01, "auc_test": 0.79},
               {"method": "npo", "lr": 1e-3, "retrain_distance": runs["near"].retrain_distance,
                "gap_closed": runs["near"].gap_closed.auc_forget, "utility_cost": 0.004, "auc_test": 0.796}]
    assert strongest_baselines(summary, 1e-3, n=1) == ["npo"]
    fig = distance_pareto_figure(summary, original_auc=0.80, retrain_auc=0.79)
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert runs["over"].retrain_distance not in list(front.x)
    assert 0.0 in list(front.x)  # the retrain: the ideal point

    # the runs table of the lab and the Evidence page: the run near the retrain first, do nothing and retrain beside
    from app.tables import runs_table

    def metrics(auc_test: float, auc_forget: float, jsd_forget: float) -> ModelMetrics:
        return ModelMetrics(auc_test, 0.7, 0.5, auc_test, 0.5, auc_forget, 0.7, 0.5, 0.5, jsd_forget, 0.0)

    def stored(name: str, method: str, cost: float) -> RunRecord:
        comparison = Comparison(Trio(metrics(0.79, 0.7, 0.01), metrics(0.80, 0.75, 0.02), metrics(0.797, 0.72, 0.0)),
                                replace(runs[name], utility_cost=cost), None, None, None, None, ())
        return RunRecord(UnlearningMethod(method), {"lr": 1e-4}, ForgetSummary("users:0.1", 0, 10, 5, 0.01, 2), 1.0,
                         9.0, False, None, {}, None, (), None, 3, 3, comparison, "/x/original", "/x/retrain",
                         f"/x/{name}")
    # over-forgetting GA, a no-op KL and NPO near the retrain
    shown = runs_table([stored("over", "ga", 0.004), stored("noop", "kl", 0.0), stored("near", "npo", 0.004)])
    assert list(shown["method"]) == ["npo", "kl", "ga", "do nothing (original)", "retrain (gold)"]
    assert list(shown["distance to retrain"])[-2:] == ["1.00", "0.00"]
    assert list(shown["utility cost"])[-1] == "+0.0030"  # the retrain's own cost, beside the runs
    # the references have no steps or lr and no matched attack here: a dash, never None or nan
    assert list(shown["lr"]) == ["0.0001"] * 3 + ["–", "–"]
    assert not shown.isin(["None", "nan", "NaN", None]).any().any()


# --------------------------------------------------------------- never-seen users

@pytest.fixture(scope="module")
def wide_data(ml100k):
    """200 real users: with a 20% never-seen share, 40 users no model trains on (20 per attack half)."""
    return subset(ml100k, 200)


def _ws(data, tmp_path, never_seen=0.2) -> Workspace:
    return Workspace(data, build_interactions(data, history=5, never_seen=never_seen),
                     DataConfig(history=5, never_seen=never_seen), tmp_path / "cache")


def test_never_seen_users_reach_no_training(tiny_ws, monkeypatch):
    inter = tiny_ws.interactions
    held = inter.never_seen_user_ids
    assert len(held) == 2 and not held & inter.seen_user_ids  # 5% of 40 users
    for spec in ("users:0.2", "genre:Drama", "interactions:0.1"):
        forget = tiny_ws.forget_set(spec)
        assert not set(forget.users) & held
        assert not set(retained_training(inter, forget)["user_id"]) & held
    seen_in_training = set()
    real = PromptBuilder.training_sequences

    def spy(self, retained, *a, **k):
        seqs = real(self, retained, *a, **k)
        seen_in_training.update(s.user_id for s in seqs)
        return seqs

    monkeypatch.setattr(PromptBuilder, "training_sequences", spy)
    train_recommender(tiny_ws, tiny_ws.forget_set("users:0.2"), TINY_MODEL, replace(TINY_TRAIN, epochs=1))
    assert seen_in_training and not seen_in_training & held


def test_the_matched_attack_scores_about_half_when_neither_side_was_seen(wide_data, tmp_path):
    """Two models trained without the forgotten users (retrains, training seeds 0 and 1): forgotten and
    never-seen users are alike to both, so the attack sits at 0.5 within its interval; the original, which
    did train on them, is reported beside (tiny models memorise little, so it is not asserted above)."""
    ws = _ws(wide_data, tmp_path)
    forget = ws.forget_set("users:0.2")
    rows = attack_rows(forget, "train")
    assert rows is not None and len(rows.unseen["user_id"].unique()) == 20
    builder = None
    for seed in (0, 1):
        model = train_recommender(ws, forget, TINY_MODEL, replace(TINY_TRAIN, seed=seed))
        builder = builder or PromptBuilder(model.fmt, ws.interactions)
        scores = {name: model.score_prompts(builder.prompts(part)) for name, part in rows.sets().items()}
        result = matched_attack(rows, scores)
        assert abs(result.auc - 0.5) < 0.08 and result.low <= 0.5 <= result.high, (seed, result.auc)
        assert set(result.per_user) == set(forget.users) and all(0 <= v <= 1 for v in result.per_user.values())


def test_the_attack_interval_from_pairs_of_users_equals_pooling_every_resample():
    """Parity of two implementations: the bilinear form over users (ResampledAuc, one matrix product per
    resample) against pooling each resample's users and ranking them (metrics.auc), on scores with ties and
    users of very different sizes; each resample's AUC bit for bit, and scipy's interval from either the same."""
    from scipy.stats import bootstrap
    rng = np.random.default_rng(3)
    users = lambda n, shift: [np.round(rng.normal(shift, 1, rng.integers(1, 40)), 1) for _ in range(n)]  # noqa: E731
    forgotten, unseen = users(9, 0.3), users(7, 0.0)
    fast = ResampledAuc(forgotten, unseen)

    def pooled(fi, ui):
        a, b = np.concatenate([forgotten[i] for i in fi]), np.concatenate([unseen[i] for i in ui])
        return auc(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])

    fi, ui = rng.integers(0, 9, (50, 9)), rng.integers(0, 7, (50, 7))
    assert np.array_equal(fast(fi, ui), [pooled(f, u) for f, u in zip(fi, ui)])
    assert fast(np.arange(9), np.arange(7)) == pooled(range(9), range(7))
    data = (np.arange(9), np.arange(7))
    intervals = [bootstrap(data, statistic, n_resamples=300, method="percentile", vectorized=vectorized,
                           rng=np.random.default_rng(0)).confidence_interval
                 for statistic, vectorized in ((fast, True), (pooled, False))]
    assert intervals[0] == intervals[1] and intervals[0].low < intervals[0].high


# --------------------------------------------------------------- the retrain-free strength rule

def _point(lr, auc, low):
    return StrengthPoint(lr, AttackResult(auc, low, auc + 0.05, {}))


def test_the_rule_picks_the_weakest_indistinguishable_strength():
    choice = choose_strength([_point(1e-3, 0.49, 0.45), _point(1e-4, 0.60, 0.55), _point(3e-4, 0.52, 0.48)])
    assert choice.strength == 3e-4 and [p.strength for p in choice.points] == [1e-4, 3e-4, 1e-3]
    assert choose_strength([_point(1e-4, 0.62, 0.58), _point(1e-3, 0.56, 0.52)]).strength == 1e-3  # nearest 0.5
    summary = [{"method": "npo", "lr": lr, "mia_never_seen_valid_auc": a, "mia_never_seen_valid_low": lo}
               for lr, a, lo in ((1e-4, 0.6, 0.55), (3e-4, 0.51, 0.47), (1e-3, 0.45, 0.40))]
    assert chosen_by_attack(summary)[0]["lr"] == 3e-4
    # do nothing already looks never-seen: the rule has nothing to read, keeps the weakest and says so
    idle = choose_strength([_point(1e-3, 0.49, 0.45), _point(3e-4, 0.52, 0.48)], AttackResult(0.52, 0.43, 0.6, {}))
    assert idle.strength == 3e-4 and not idle.informative and "already indistinguishable" in idle.reason
    summary = [{**s, "original_mia_never_seen_valid_auc": 0.52, "original_mia_never_seen_valid_low": 0.43}
               for s in summary]
    assert chosen_by_attack(summary)[0]["lr"] == 1e-4 and "nothing for the rule" in chosen_by_attack(summary)[0]["chosen_by"]


def test_the_study_sweeps_strengths_on_one_draw_and_runs_the_pick_on_the_others():
    study = StudyConfig(seeds=(0, 1, 2), lrs=(1e-4, 3e-4, 1e-3))
    sweep = _sweep_cells(study, 0, 1e-4)  # every method and arm at every strength, and the retrain
    assert len(sweep) == 3 * len(METHODS) + 1 + 3 * len(SWEPT_ARMS) and {c.seed for c in sweep} == {0}
    picks = {m: Chosen(3e-4 if m == "npo" else 1e-4, "rule") for m in METHODS}
    arms = {a: Chosen(1e-3 if a == "npo+salun" else 1e-4, "rule") for a in SWEPT_ARMS}
    later = _picked_cells(study, (1, 2), picks, arms, 1e-4)
    # per draw: 7 methods at their pick, npo also at the default it differs from, the retrain, 3 arms
    assert len(later) == 2 * (len(METHODS) + 1 + 1 + len(SWEPT_ARMS)) and {c.seed for c in later} == {1, 2}
    assert {c.lr for c in later if c.method == "npo" and c.section == "pareto"} == {1e-4, 3e-4}
    assert {(c.arm, c.lr) for c in later if c.section == "ablation"} == {
        ("npo+pcgrad", 1e-4), ("npo+salun", 1e-3), ("cure (random groups)", 1e-4)}
    # old 3 x (3 strengths x 7 methods + retrain + 3 strengths x 3 arms): 93 cells; the pick equal to the default: 53
    assert len(sweep) + len(_picked_cells(study, (1, 2), {m: Chosen(1e-4, "") for m in METHODS}, {
        a: Chosen(1e-4, "") for a in SWEPT_ARMS}, 1e-4)) == 53


def _cell_row(arm, lr, seed, auc, low, distance):
    method = arm.split("+")[-1] if arm != "cure (random groups)" else "cure"
    return {"section": "pareto" if arm in ("npo", "cure") else "ablation", "method": method, "arm": arm, "lr": lr,
            "seed": seed, "mia_never_seen_valid_auc": auc, "mia_never_seen_valid_low": low,
            "retrain_distance": distance, "utility_cost": 0.1, "mia_never_seen_auc": 0.5}


def test_the_pick_is_read_on_the_selection_draw_alone_and_reported_over_every_draw():
    rows = [_cell_row("npo", lr, 0, auc, low, d) for lr, auc, low, d in (
        (1e-4, 0.60, 0.55, 0.9), (3e-4, 0.51, 0.47, 0.5), (1e-3, 0.45, 0.40, 0.2))]
    # draw 1 ran the pick only; had it run 1e-4 and looked never-seen there, the rule must still not see it
    rows += [_cell_row("npo", 3e-4, 1, 0.52, 0.48, 0.3), _cell_row("npo", 1e-4, 1, 0.50, 0.45, 0.8)]
    picks = chosen_on_draw(rows, 0)
    assert picks["npo"].lr == 3e-4 and "weakest strength" in picks["npo"].reason
    assert chosen_on_draw(rows, 1)["npo"].lr == 1e-4  # what draw 1 alone would have said: not what is used
    (head,) = at_chosen(summarise(rows, ("method", "lr")), picks)
    assert head["lr"] == 3e-4 and head["n_seeds"] == 2 and head["retrain_distance"] == pytest.approx(0.4)
    rows += [_cell_row("cure", 1e-4, s, 0.5, 0.45, d) for s, d in ((0, 0.1), (1, 0.2))]
    arms = ablation(rows, 0)
    assert [(a["arm"], a["lr"], a["n_seeds"]) for a in arms.arms] == [("npo", 3e-4, 2), ("cure", 1e-4, 2)]
    # CURE minus NPO paired by draw at each one's pick: (0.1 - 0.5 + 0.2 - 0.3) / 2
    assert arms.cure_minus["npo"]["retrain_distance"]["mean"] == pytest.approx(-0.25)


def test_the_rule_never_reads_the_retrain_or_the_test_set(tiny_ws, monkeypatch):
    original = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)

    def forbidden(*a, **k):
        raise AssertionError("the strength rule read the retrain")

    real_split = Interactions.split

    def split(self, name):
        assert name != TEST, "the strength rule read the test set"
        return real_split(self, name)

    monkeypatch.setattr("analysis.unlearn.lab.retrain_for", forbidden)
    monkeypatch.setattr("analysis.model.train.train_recommender", forbidden)
    monkeypatch.setattr(Interactions, "split", split)
    forget = tiny_ws.forget_set("users:0.2")
    choice = strength_sweep(tiny_ws, original, forget, UnlearnConfig(method="npo", steps=2), (1e-4, 1e-3))
    assert choice.strength in (1e-4, 1e-3) and len(choice.points) == 2


def test_the_auto_stop_ends_once_forgotten_users_look_never_seen(wide_data, tmp_path, monkeypatch):
    from analysis.unlearn.run import unlearn_steps

    ws = _ws(wide_data, tmp_path)
    original = train_recommender(ws, None, TINY_MODEL, TINY_TRAIN)
    monkeypatch.setattr("analysis.unlearn.lab.retrain_for", lambda *a, **k: pytest.fail("the run read the retrain"))
    forget = ws.forget_set("users:0.2")
    out = unlearn_steps(ws, original, forget, UnlearnConfig(method="ga", epochs=3, lr=3e-3, stop="auto"), None)
    checks = [c for c in out.curves if c["stop_attack"] is not None]
    assert checks and all(c["step"] % 10 == 0 for c in checks)
    assert out.stopped.reason.startswith("forgotten users indistinguishable")
    assert out.stopped.low <= 0.5 and out.steps_run == checks[-1]["step"] < out.steps_budget
    with pytest.raises(Exception, match="interaction-level"):  # no forgotten users to compare
        unlearn_steps(ws, original, ws.forget_set("interactions:0.1"), UnlearnConfig(method="ga", stop="auto"), None)


# --------------------------------------------------------------- CURE with random groups

def test_random_groups_keep_the_sizes_of_every_node_kind():
    table = graph_table(4, 4)
    names = [n.name for n in table.nodes if n.kind.value in ("head", "mlp")]
    groups = {n: (Group.FORGET if i % 3 == 0 else Group.SHARED if i % 3 == 1 else Group.INACTIVE)
              for i, n in enumerate(names)}
    shuffled = random_groups(groups, table, seed=1)
    assert set(shuffled) == set(groups) and shuffled != groups
    for kind in ("head", "mlp"):
        mine = [n for n in names if table[n].kind.value == kind]
        assert sorted(groups[n].value for n in mine) == sorted(shuffled[n].value for n in mine)
    assert random_groups(groups, table, seed=1) == shuffled
    with pytest.raises(Exception, match="ablation of cure"):
        UnlearnConfig(method="npo", random_groups=0)
