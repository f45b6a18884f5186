"""The one progress model: stages in order, nothing decreases, cached stages named, waiting said, time left."""
from __future__ import annotations

import json

from analysis.progress import ProgressView, Stage, StagedProgress

PLAN = (Stage("retrain", ("train",), seconds=50), Stage("circuits", ("eap", "node patching"), passes=2, seconds=20),
        Stage("unlearning", ("unlearn",), seconds=20), Stage("evaluation", ("score", "rank"), seconds=10))


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _run(events, plan=PLAN, costs=None):
    views: list[ProgressView] = []
    p = StagedProgress(plan, views.append, costs=costs, clock=Clock())
    for e in events:
        p(*e)
    p.finish()
    return views


def test_restarts_and_stage_jumps_never_move_a_bar_back():
    # what a lab run reported on main: EAP-IG per seed, patching twice, then evaluation restarting at 1/4
    events = ([("eap-ig", d, 256) for d in (64, 256)] + [("eap-ig", d, 256) for d in (64, 128, 256)]
              + [("node patching", d, 84) for d in (1, 42, 84)] * 2 + [("unlearn", d, 10) for d in range(1, 11)]
              + [("score", d, 4) for d in range(1, 5)] + [("rank", 1, 4), ("score", 1, 4)])
    views = _run(events)
    stages = [v.stage for v in views]
    assert stages == sorted(stages) and stages[-1] == 4
    overall = [v.overall for v in views]
    assert all(b >= a for a, b in zip(overall, overall[1:])) and overall[-1] == 1.0
    for k in range(1, 5):  # within a stage, its own bar never decreases
        f = [v.stage_fraction for v in views if v.stage == k]
        assert all(b >= a for a, b in zip(f, f[1:]))
    assert views[-1].done and views[-1].stage_fraction == 1.0


def test_a_skipped_stage_is_named_from_cache_and_the_text_says_stage_k_of_n():
    views = _run([("unlearn", 1, 2), ("unlearn", 2, 2)])
    v = views[0]
    assert v.stage == 3 and v.cached == ("retrain", "circuits")
    assert v.text.startswith("stage 3 of 4: unlearning (unlearn 1/2) 45%") and "from cache: retrain, circuits" in v.text


def test_the_bar_is_the_share_of_this_jobs_time_so_cached_stages_weigh_nothing():
    # retrain and circuits cached (70 of the plan's 100 s): the bar starts near 0, not at 70%, and unlearning
    # (20 s of the 30 s left) fills two thirds of it
    views = _run([("unlearn", 1, 2), ("unlearn", 2, 2), ("score", 1, 1)])
    assert views[0].overall < 0.35
    at_end_of_steps = next(v for v in views if v.stage == 3 and v.stage_fraction >= 0.9)
    assert abs(at_end_of_steps.overall - 0.9 * 20 / 30) < 1e-9
    overall = [v.overall for v in views]
    assert all(b >= a for a, b in zip(overall, overall[1:])) and overall[-1] == 1.0


def test_waiting_on_another_session_is_its_own_state_and_keeps_the_bars():
    views = _run([("train", 5, 10), ("waiting for another run that is building this", 0, 1), ("train", 6, 10)])
    waiting = views[1]
    assert waiting.waiting and "waiting for another run" in waiting.text
    assert waiting.stage_fraction == views[0].stage_fraction and waiting.overall == views[0].overall


def test_time_left_comes_from_measured_costs_saved_by_earlier_jobs(tmp_path):
    costs = tmp_path / "timings.json"
    _run([("train", 1, 1), ("eap", 1, 1), ("unlearn", 1, 1), ("score", 1, 1)], costs=costs)
    measured = json.loads(costs.read_text())["custom"]
    assert set(measured) == {"retrain", "circuits", "unlearning", "evaluation"}
    views = _run([("train", 1, 2)], costs=costs)
    expected = 0.55 * measured["retrain"] + measured["circuits"] + measured["unlearning"] + measured["evaluation"]
    assert abs(views[0].seconds_left - expected) < 1e-6
    costs.write_text("{not json")  # a broken costs file only costs the estimate
    assert _run([("train", 1, 2)], costs=costs)[0].seconds_left is not None


def test_a_sub_jobs_own_stages_are_said_but_do_not_move_the_bar():
    plan = (Stage("study cells", ("study",)),)
    views = _run([("study", 1, 4), ("train", 5, 10), ("unlearn", 3, 9), ("study", 2, 4)], plan=plan)
    assert [round(v.stage_fraction, 3) for v in views[:4]] == [0.225, 0.225, 0.225, 0.45]
    assert views[1].detail == "train 5/10"


def test_a_trainings_own_evaluation_stays_in_the_training_stage():
    from analysis.progress import within

    views: list[ProgressView] = []
    p = StagedProgress(PLAN, views.append, clock=Clock())
    inner = within(p, "train")
    p("train", 5, 5)
    inner("score", 1, 4)
    inner("waiting for another run", 0, 1)
    p("unlearn", 1, 2)
    assert [v.stage for v in views] == [1, 1, 1, 3] and views[1].detail == "train: score 1/4"
    assert views[2].waiting == "waiting for another run" and views[3].cached == ("circuits",)


def test_the_time_spent_waiting_on_another_session_is_measured():
    views: list[ProgressView] = []
    p = StagedProgress(PLAN, views.append, clock=Clock())
    p("train", 1, 2)
    p("waiting for another run that is building this run (abcd)", 0, 1)
    p("waiting for another run that is building this run (abcd)", 0, 1)
    p("train", 2, 2)
    p.finish()
    assert p.waited_seconds > 0
