"""Module groups follow their thresholds; Jaccard and stability on hand-made sets."""
from __future__ import annotations

import pytest
import torch

from analysis.circuits.groups import (Group, GroupThresholds, group_stability, jaccard, label_modules,
                                      normalised_importance)
from analysis.errors import SettingsError

NAMES = ["a0.h0", "a0.h1", "m0", "a1.h0"]


def test_importance_is_in_units_of_the_mean_module():
    imp = normalised_importance(torch.tensor([1.0, -3.0, 0.0, 0.0]))
    assert imp.tolist() == [1.0, 3.0, 0.0, 0.0]
    assert normalised_importance(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_labels_follow_the_thresholds():
    # importances (x mean): forget = [2, 2, 0, 0], retain = [0, 2, 2, 0] on the same scale
    forget = torch.tensor([1.0, 1.0, 0.0, 0.0])
    retain = torch.tensor([0.0, -1.0, 1.0, 0.0])
    labels = label_modules(NAMES, forget, retain, GroupThresholds(0.5, 0.5))
    assert labels == {"a0.h0": Group.FORGET, "a0.h1": Group.SHARED, "m0": Group.RETAIN, "a1.h0": Group.INACTIVE}
    # raise the forget threshold above every forget importance: nothing stays forget-important
    labels = label_modules(NAMES, forget, retain, GroupThresholds(2.5, 0.5))
    assert labels == {"a0.h0": Group.INACTIVE, "a0.h1": Group.RETAIN, "m0": Group.RETAIN, "a1.h0": Group.INACTIVE}
    # a threshold exactly at an importance counts as important
    assert label_modules(NAMES, forget, retain, GroupThresholds(2.0, 2.0))["a0.h1"] is Group.SHARED


def test_bad_thresholds_are_rejected():
    with pytest.raises(SettingsError, match="forget threshold"):
        GroupThresholds(-0.1, 0.5)


def test_jaccard_and_stability():
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) is None  # agreeing on nothing is not stability
    a = {"x": Group.FORGET, "y": Group.SHARED, "z": Group.INACTIVE}
    b = {"x": Group.FORGET, "y": Group.INACTIVE, "z": Group.SHARED}
    stab = group_stability([a, a, b])
    # pairs (a,a), (a,b), (a,b): forget-specific agrees everywhere, task-shared once in three
    assert stab[Group.FORGET.value] == 1.0
    assert stab[Group.SHARED.value] == pytest.approx(1 / 3)
    assert stab[Group.RETAIN.value] is None  # empty in every labeling: reported as empty, not 1.0
    with pytest.raises(ValueError):
        group_stability([a])
