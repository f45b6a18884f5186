"""The tour says only what the results show: every step's text checked against the facts it states."""
from __future__ import annotations

import re

import pytest

from analysis.tour import RunFacts, TourFacts, tour_steps

BASE = dict(request="users:0.1", model_auc=0.807, bias_auc=0.773, model_hr=0.501, bias_hr=0.508)


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w.])-?\d+\.\d+", text)]


def _step(facts: TourFacts, page: str):
    return next(s for s in tour_steps(facts) if s.page.endswith(page))


def test_overview_says_where_the_model_loses_to_the_baseline():
    text = _step(TourFacts(**BASE, groups=None, stability=None), "overview.py").text
    assert "On test AUC it beats" in text and "on HR@10, ranking unrated candidates, it does not beat" in text
    assert {0.807, 0.773, 0.501, 0.508} <= set(_numbers(text))
    better = _step(TourFacts(**{**BASE, "model_hr": 0.52}, groups=None, stability=None), "overview.py").text
    assert "does not beat" not in better and "weak spot" not in better


def test_circuits_step_states_the_group_sizes_and_never_calls_empty_groups_stable():
    groups = {"forget-specific": 0, "retain-specific": 13, "task-shared": 460, "inactive": 1222}
    stability = {"forget-specific": None, "retain-specific": 0.41, "task-shared": 0.88, "inactive": 0.97}
    step = _step(TourFacts(**BASE, groups=groups, stability=stability), "circuits.py")
    assert "0 forget-specific" in step.text and "13 retain-specific" in step.text and "460 task-shared" in step.text
    assert "Empty here: forget-specific" in step.text
    assert "Empty on every seed (no overlap to measure): forget-specific" in step.text
    assert "forget-specific 0." not in step.text and "forget-specific 1.00" not in step.text
    for name, value in stability.items():
        if value is not None:
            assert f"{name} {value:.2f}" in step.text
    assert "stable" not in step.text.lower()


def test_circuits_step_states_what_the_forget_group_holds_in_words():
    groups = {"forget-specific": 62, "retain-specific": 0, "task-shared": 460, "inactive": 1222}
    sentences = ("forget-specific: 62 movie rows (62 forget-only by presence: no retained user's prompt holds them), "
                 "each in the prompts of 12% of the forget side's users and 0% of the retain side's (medians); no "
                 "head, MLP (heads: largest |log ratio| 0.18, the data would detect one above 0.74).",
                 "retain-specific: empty.", "task-shared: 4 heads.")
    step = _step(TourFacts(**BASE, groups=groups, stability=None, forget_item_rows=62, group_sentences=sentences),
                 "circuits.py")
    assert sentences[0] in step.text and step.claims["summary"] == sentences[0]
    assert "62 forget-specific (62 of them item rows)" in step.text and step.claims["forget-specific"] == 62
    assert "retain-specific: empty." not in step.text  # the step states the forget group's sentence only
    bare = _step(TourFacts(**BASE, groups=groups, stability=None), "circuits.py")
    assert "summary" not in bare.claims


def test_circuits_step_before_discovery_says_how_long_the_first_one_takes():
    step = _step(TourFacts(**BASE, groups=None, stability=None, circuits_seconds=95.0), "circuits.py")
    assert "not computed yet" in step.text and "about 2 min" in step.text and not step.claims["computed"]


@pytest.mark.parametrize("forget_loss, word", [((0.56, 0.71), "rose"), ((0.56, 0.52), "fell")])
def test_lab_step_describes_the_loss_curve_it_has_not_the_one_it_wishes(forget_loss, word):
    run = RunFacts("cure", 115, 0.66, 0.0048, forget_loss, (0.50, 0.49), retrain_distance=0.34)
    step = _step(TourFacts(**BASE, groups=None, stability=None, run=run, picked=("a0.h1", "m2")), "lab.py")
    assert f"forget loss {word} from {forget_loss[0]:.3f} to {forget_loss[1]:.3f} over 115 steps" in step.text
    assert "watch the losses fall" not in step.text and "chart drew" not in step.text  # no curve given
    drawn = RunFacts("cure", 115, 0.66, 0.0048, forget_loss, (0.50, 0.49), retrain_distance=0.34,
                     forget_ends=(0.601, 0.575))  # the chart's end points, quoted as such, beside the averages
    text = _step(TourFacts(**BASE, groups=None, stability=None, run=drawn), "lab.py").text
    assert "drew the forget loss from 0.601 at step 1 to 0.575 at step 115" in text
    assert f"averaged over the first and last 5 steps, the forget loss {word} from {forget_loss[0]:.3f}" in text
    assert "2 node(s) (a0.h1, m2)" in step.text and "`selective`" in step.text
    compare = _step(TourFacts(**BASE, groups=None, stability=None, run=run), "compare.py").text
    assert "distance 0.34 from the retrain" in compare and "closed 0.66 of the forget-AUC gap" in compare
    assert "0.0048" in compare and "over-forgetting" not in compare
    # a run past the retrain is called over-forgetting, next to its distance
    over = RunFacts("cure", 115, 1.33, 0.0115, forget_loss, (0.50, 0.49), retrain_distance=0.33)
    step = _step(TourFacts(**BASE, groups=None, stability=None, run=over), "compare.py")
    assert "distance 0.33" in step.text and "over-forgetting" in step.text and step.claims["over_forgetting"]


def test_the_tour_includes_selective_and_evidence():
    steps = tour_steps(TourFacts(**BASE, groups=None, stability=None))
    assert [s.page.split("/")[-1] for s in steps] == ["overview.py", "trace.py", "circuits.py", "lab.py",
                                                       "compare.py", "evidence.py"]
    assert "Nothing is picked yet" in steps[3].text and "No study stored yet" in steps[5].text
    assert "not run here yet: budget about 15 min" in steps[5].text  # no measured time: a budget, said as such
    timed = tour_steps(TourFacts(**BASE, groups=None, stability=None, study_seconds=600.0))[5].text
    assert "it took about 10 min here last time" in timed  # the machine's own measured time, not a constant
