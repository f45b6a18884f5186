"""The yardstick on hand-made scores, the auto stop, the method registry, SalUn's mask, Adam and SGD."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.model.train import train_recommender
from analysis.unlearn.methods import UnlearningMethod
from analysis.progress import PLANS
from analysis.unlearn.registry import OBJECTIVES, REGISTRY, saliency_mask, spec_of, step_spec_of
from analysis.unlearn.run import UnlearnConfig, unlearn_steps
from analysis.unlearn.yardstick import NO_GAP, GapClosed, yardstick
from tests.conftest import TINY_MODEL, TINY_TRAIN


def _scores(n=4000, seed=0):
    """Original memorised (separates forget labels well), retrain less so."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    original = (y * 2 - 1) * 1.5 + rng.standard_normal(n)
    retrain = (y * 2 - 1) * 0.6 + rng.standard_normal(n)
    return y, original, retrain


def _metrics(mia_run=0.55, auc_test_run=0.80):
    return {"run": {"mia_auc": mia_run, "auc_test": auc_test_run}, "retrain": {"mia_auc": 0.50, "auc_test": 0.79},
            "original": {"mia_auc": 0.60, "auc_test": 0.80}}


def test_a_no_op_scores_zero_and_retrain_scores_one():
    y, original, retrain = _scores()
    noop = yardstick({"run": original, "retrain": retrain, "original": original}, y, _metrics(0.60, 0.80))
    assert noop.measurable and noop.gap.low > 0
    assert noop.gap_closed == GapClosed(0.0, 0.0, 0.0)
    assert noop.jsd_ratio == 1.0 and noop.utility_cost == 0.0 and not noop.over_forgetting
    like = yardstick({"run": retrain, "retrain": retrain, "original": original}, y, _metrics(0.50, 0.79))
    assert like.gap_closed == GapClosed(1.0, 1.0, 1.0)
    assert like.jsd_ratio == 0.0 and like.utility_cost == pytest.approx(0.01)
    # an attack-AUC gap below its resolution is not divided by
    close = _metrics(0.55)
    close["retrain"]["mia_auc"] = 0.595
    assert yardstick({"run": retrain, "retrain": retrain, "original": original}, y, close).gap_closed.mia_auc is None


def test_over_forgetting_is_flagged_and_no_gap_is_said():
    y, original, retrain = _scores()
    rng = np.random.default_rng(1)
    wiped = rng.standard_normal(len(y))  # forget samples look less familiar than never-seen ones
    over = yardstick({"run": wiped, "retrain": retrain, "original": original}, y, _metrics())
    assert over.gap_closed.auc_forget > 1 and over.over_forgetting and "over-forgetting" in over.note
    # original and retrain indistinguishable on the forget samples: nothing to close
    same = original + 1e-3 * rng.standard_normal(len(y))
    none = yardstick({"run": wiped, "retrain": same, "original": original}, y, _metrics())
    assert not none.measurable and none.gap_closed.auc_forget is None and none.note == NO_GAP


def test_every_method_is_one_registry_entry():
    assert set(REGISTRY) == set(UnlearningMethod)  # retrain too: it has facts, if no steps
    steppable = {m for m in UnlearningMethod if m is not UnlearningMethod.RETRAIN}
    assert {m for m, spec in REGISTRY.items() if spec.steps} == steppable
    for method, spec in REGISTRY.items():
        assert spec.method is method and spec_of(method.value) is spec
        if spec.steps:
            assert spec.objective in OBJECTIVES and callable(spec.rule) and step_spec_of(method) is spec
        else:
            assert spec.objective is None and not spec.options
            with pytest.raises(ValueError, match="not a step method"):
                step_spec_of(method)
    assert {m for m, s in REGISTRY.items() if s.uses_circuits} == {UnlearningMethod.CURE, UnlearningMethod.SELECTIVE}
    assert {m for m, s in REGISTRY.items() if s.uses_saliency} == {UnlearningMethod.SALUN}


def test_method_facts_come_from_the_spec_alone():
    """The config, the progress plan and the options a method takes are all read from its spec."""
    fields = set(UnlearnConfig.__dataclass_fields__)
    for method, spec in REGISTRY.items():
        assert set(spec.options) <= fields - {"method"}, method
        cfg = UnlearnConfig(method=method, modules=("m0",))  # selective needs modules; the others ignore them
        assert cfg.spec is spec and cfg.uses_circuits == spec.uses_circuits
        assert ("saliency" in cfg.key()) == spec.uses_saliency
        assert (cfg.forget_objective == "none") == (not spec.steps)
        stages = {s.name for s in PLANS[spec.plan]}
        assert ("circuits" in stages) == spec.uses_circuits and ("unlearning" in stages) == spec.steps
        assert {"retrain", "evaluation"} <= stages
    # an option a method does not take is refused where it would change the run, by the same facts
    with pytest.raises(Exception, match="ablation of cure"):
        UnlearnConfig(method="selective", modules=("m0",), random_groups=1)
    with pytest.raises(Exception, match="needs --modules"):
        UnlearnConfig(method="selective")


def test_salun_masks_exactly_its_top_k_elements():
    torch.manual_seed(0)
    g = {"a": torch.randn(10, 10), "b": torch.randn(37), "c": torch.zeros(5)}
    g["b"][:3] = 5.0  # ties at the top
    mask = saliency_mask(g, 0.1)
    total = sum(t.numel() for t in g.values())
    k = round(0.1 * total)
    assert sum(int(m.sum()) for m in mask.values()) == k
    chosen = torch.cat([t.abs().reshape(-1)[m.reshape(-1)] for t, m in zip(g.values(), mask.values())])
    rest = torch.cat([t.abs().reshape(-1)[~m.reshape(-1)] for t, m in zip(g.values(), mask.values())])
    assert float(chosen.min()) >= float(rest.max())


@pytest.fixture
def tiny_rec(tiny_ws):
    return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)


def test_the_loss_stop_ends_when_forget_loss_reaches_held_out_loss_without_a_retrain(tiny_ws, tiny_rec, monkeypatch):
    import analysis.unlearn.lab as lab
    import analysis.model.train as train

    monkeypatch.setattr(lab, "retrain_for", lambda *a, **k: pytest.fail("the run read the retrain"))
    calls = []
    real = train.train_recommender
    monkeypatch.setattr(train, "train_recommender", lambda *a, **k: calls.append(a) or real(*a, **k))
    forget = tiny_ws.forget_set("users:0.2")
    cfg = UnlearnConfig(method="ga", epochs=20, lr=3e-3, batch_size=16, stop="loss")
    out = unlearn_steps(tiny_ws, tiny_rec, forget, cfg, None)
    assert out.stopped.reason.startswith("forget loss reached")
    assert out.steps_run < out.steps_budget
    window = [c["forget_bce"] for c in out.curves[-5:]]
    assert np.mean(window) >= out.stopped.target_loss
    assert not calls  # no model was trained: the retrain is only the judge


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_adam_and_sgd_runs_store_their_applied_conflict(tiny_ws, tiny_rec, optimizer):
    forget = tiny_ws.forget_set("users:0.2")
    cfg = UnlearnConfig(method="graddiff", steps=3, lr=1e-3, batch_size=8, optimizer=optimizer, stop="budget")
    out = unlearn_steps(tiny_ws, tiny_rec, forget, cfg, None)
    for key in ("applied", "applied_update"):
        assert getattr(out.conflict, key).module_steps > 0
        assert 0 <= getattr(out.conflict, key).negative_share <= 1
    assert out.steps_run == 3 and all("update_negative_share" in c for c in out.curves)


def test_the_forget_objective_is_a_named_option_that_changes_the_run_and_its_key(tiny_ws, tiny_rec):
    from analysis.errors import SettingsError

    assert UnlearnConfig(method="cure").forget_objective == "npo"
    assert UnlearnConfig(method="graddiff").forget_objective == "ascent"
    assert UnlearnConfig(method="graddiff").key() != UnlearnConfig(method="graddiff", objective="npo").key()
    with pytest.raises(SettingsError, match="unknown forget objective"):
        UnlearnConfig(method="graddiff", objective="hinge")
    forget = tiny_ws.forget_set("users:0.2")
    runs = {name: unlearn_steps(tiny_ws, tiny_rec, forget, UnlearnConfig(
        method="graddiff", steps=2, lr=1e-3, batch_size=8, objective=name), None) for name in ("ascent", "npo")}
    a, b = (dict(runs[n].model.named_parameters()) for n in ("ascent", "npo"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
