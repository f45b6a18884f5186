"""Graph-level hooks, attribution against exact patching, faithfulness, cached discovery and the CLI."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from analysis.circuits.attribution import AttributionConfig, attribute, patch_nodes
from analysis.circuits.corrupt import build_prompt_set
from analysis.circuits.discover import CircuitResult, CircuitSettings, discover_circuits
from analysis.circuits.faithfulness import circuit_points
from analysis.circuits.graph import CircuitGraph
from analysis.circuits.ownership import recommender_table
from analysis.circuits.groups import Group, GroupThresholds
from analysis.circuits.runner import LOGITS_IN_HOOK, GraphRunner
from analysis.circuits.trace import load_bridge
from analysis.errors import SettingsError
from analysis.model.recommender import Recommender, load_recommender
from analysis.model.sequences import PromptBuilder, pad_batch
from analysis.model.train import train_recommender
from tests.conftest import TINY_MODEL, TINY_TRAIN
from tests.test_model import _tiny_pretrained_backbone


@pytest.fixture
def tiny_rec(tiny_ws):
    return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)


def _prompts(ws, rec, n=12, corruption="ppr", seed=0):
    rows = ws.interactions.split("train").sample(n, random_state=seed)
    return build_prompt_set(PromptBuilder(rec.fmt, ws.interactions), rows, corruption, seed=seed)


def _metric_of(rec, prompts, labels) -> float:
    """The metric through plain Hugging Face scoring: an independent path to the same number."""
    return float(np.mean((labels * 2 - 1) * rec.score_prompts(prompts)))


@pytest.fixture(params=["gpt2", "llama"])
def any_rec(request, tiny_ws, tmp_path):
    """The word-level GPT-2 recommender, and a Llama-family backbone (GQA, no biases, rotary)."""
    if request.param == "gpt2":
        return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    backbone = _tiny_pretrained_backbone(tmp_path / "llama", tiny_ws.data.items["title"].head(300), "llama")
    return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN, backbone=backbone)


def test_graph_matches_the_architecture_and_node_outputs_sum_to_the_residual(tiny_ws, any_rec):
    runner = GraphRunner(load_bridge(any_rec), any_rec)
    L, H = runner.n_layers, runner.n_heads
    g = runner.graph
    assert (len(g.upstream), len(g.downstream)) == (1 + L * (H + 1), L * (H + 1) + 1)
    # heads read input + earlier layers; an MLP also reads its own layer's heads; logits read all
    assert g.n_edges == sum(H * (1 + l * (H + 1)) + (1 + l * (H + 1) + H) for l in range(L)) + len(g.upstream)
    ps = _prompts(tiny_ws, any_rec, n=4)
    tokens = torch.from_numpy(pad_batch(ps.clean, runner.pad_id))
    out = runner.outputs(tokens)
    assert out.shape[2] == len(g.upstream)
    assert bool((out.flatten(0, 1).abs().sum((0, 2)) > 0).all())  # every node's hook fired with signal
    _, cache = runner.bridge.run_with_cache(tokens, names_filter=lambda n: n == LOGITS_IN_HOOK)
    biases = sum((b.attn.b_O for b in runner.bridge.blocks if getattr(b.attn, "b_O", None) is not None),
                 torch.zeros(out.shape[-1]))
    torch.testing.assert_close(out.sum(2) + biases, cache[LOGITS_IN_HOOK], atol=1e-4, rtol=1e-4)


def test_patching_nothing_is_clean_and_everything_is_the_corrupted_run(tiny_ws, any_rec):
    runner = GraphRunner(load_bridge(any_rec), any_rec)
    ps = _prompts(tiny_ws, any_rec, n=8)
    effects, clean = patch_effects_for(runner, ps, [torch.zeros_like(runner.graph.allowed), runner.graph.allowed])
    assert clean == pytest.approx(_metric_of(any_rec, ps.clean, ps.labels), abs=1e-4)
    assert effects[0] == pytest.approx(0.0, abs=1e-5)
    assert clean - effects[1] == pytest.approx(_metric_of(any_rec, ps.corrupt, ps.labels), abs=1e-4)


def test_the_yes_no_readout_equals_the_metric_read_from_the_full_logits(tiny_ws, any_rec):
    """The runner reads the metric through W_U[:, yes] - W_U[:, no] and stops before the unembedding;
    the same interventions with every logit computed give the same metric and the same gradients."""
    runner = GraphRunner(load_bridge(any_rec), any_rec)
    ps = _prompts(tiny_ws, any_rec, n=6)
    tokens = torch.from_numpy(pad_batch(ps.clean, runner.pad_id))
    corrupt_tokens = torch.from_numpy(pad_batch(ps.corrupt, runner.pad_id, tokens.shape[1]))
    last = torch.tensor([len(p) - 1 for p in ps.clean])
    sign = torch.as_tensor(ps.labels * 2 - 1, dtype=torch.float32)
    remove = torch.rand(runner.graph.allowed.shape, generator=torch.Generator().manual_seed(0)) < 0.3

    def both(fn):
        runner.full_logits = False
        fast = fn()
        runner.full_logits = True
        full = fn()
        runner.full_logits = False
        return fast, full

    corrupt = runner.outputs(corrupt_tokens)
    fast, full = both(lambda: runner.patched_metric(tokens, last, sign, corrupt, remove))
    assert float(fast.abs().max()) > 0.01  # the metric is not trivially zero
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    (g_fast, m_fast), (g_full, m_full) = both(lambda: runner.input_grads(tokens, last, sign))
    torch.testing.assert_close(m_fast, m_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_fast, g_full, atol=1e-5, rtol=1e-5)
    assert float(g_fast.abs().max()) > 0


def patch_effects_for(runner, ps, masks):
    from analysis.circuits.attribution import patch_effects

    effects, clean = patch_effects(runner, ps, masks, batch_size=5)  # 5: batches of unequal size too
    return effects.tolist(), clean


def test_a_hook_that_never_fires_is_an_error(tiny_ws, tiny_rec, monkeypatch):
    runner = GraphRunner(load_bridge(tiny_rec), tiny_rec)
    ps = _prompts(tiny_ws, tiny_rec, n=2)
    tokens = torch.from_numpy(pad_batch(ps.clean, runner.pad_id))
    # isolate the guard: a bridge that runs the model but silently drops the hooks
    monkeypatch.setattr(runner.bridge, "run_with_hooks", lambda toks, fwd_hooks: runner.bridge(toks))
    with pytest.raises(RuntimeError, match="hooks did not fire"):
        runner.outputs(tokens)


def _squashed(rec: Recommender, data, folder, eps: float) -> Recommender:
    """A copy whose item and rating embeddings sit within eps of their mean.

    The corruption only swaps item and rating tokens, so it becomes an O(eps) nudge of the
    input, and first-order attribution is exact up to O(eps^2).
    """
    model = copy.deepcopy(rec.model)
    vocab = rec.tokenizer.get_vocab()
    ids = torch.tensor([i for w, i in vocab.items() if w.startswith("item_") or w.startswith("★")])
    with torch.no_grad():
        w = model.get_input_embeddings().weight
        mean = w[ids].mean(0)
        w[ids] = mean + eps * (w[ids] - mean)
    out = Recommender(model, rec.tokenizer, rec.fmt, rec.meta)
    folder.mkdir()
    out.save(folder)
    return load_recommender(folder, data, check=False)


def test_eap_equals_exact_edge_patching_where_first_order_is_exact(tiny_ws, tiny_rec, tmp_path):
    rec = _squashed(tiny_rec, tiny_ws.data, tmp_path / "squashed", eps=1e-3)
    runner = GraphRunner(load_bridge(rec), rec)
    ps = _prompts(tiny_ws, rec, n=16)
    exact = attribute(runner, ps, AttributionConfig("patching", batch_size=8))
    assert exact.edges.abs().max() > 1e-5  # the nudge still moves the metric measurably
    for method in ("eap", "eap-ig"):
        approx = attribute(runner, ps, AttributionConfig(method, ig_steps=4, batch_size=8))
        rel = float((approx.edges - exact.edges).norm() / exact.edges.norm())
        assert rel < 0.01, (method, rel)  # measured 0.0017 at eps 1e-3, 0.021 at 1e-2: the error is O(eps)
        assert approx.clean_metric == pytest.approx(exact.clean_metric, abs=1e-5)
        assert approx.corrupt_metric == pytest.approx(exact.corrupt_metric, abs=1e-5)
    # a node's score is the sum of its out-edges, and it matches exact node patching too
    nodes = patch_nodes(runner, ps, batch_size=8)
    assert float((exact.edges.sum(1) - nodes).norm() / nodes.norm()) < 0.01


def test_eap_ig_ranks_nodes_like_patching_on_a_trained_model(tiny_ws, tiny_rec):
    from scipy.stats import spearmanr

    runner = GraphRunner(load_bridge(tiny_rec), tiny_rec)
    ps = _prompts(tiny_ws, tiny_rec, n=32)
    ig = attribute(runner, ps, AttributionConfig("eap-ig", batch_size=16))
    exact = patch_nodes(runner, ps, batch_size=16)
    assert spearmanr(ig.nodes[1:], exact[1:]).statistic > 0.6


def test_faithfulness_is_one_for_the_full_graph_and_the_corrupted_value_for_the_empty_one(tiny_ws, tiny_rec):
    runner = GraphRunner(load_bridge(tiny_rec), tiny_rec)
    ps = _prompts(tiny_ws, tiny_rec, n=12)
    scores = attribute(runner, ps, AttributionConfig("eap", batch_size=6)).edges
    n = runner.graph.n_edges
    empty, mid, full = circuit_points(runner, ps, scores, [0, n // 4, n], batch_size=6)
    clean, corrupt = _metric_of(tiny_rec, ps.clean, ps.labels), _metric_of(tiny_rec, ps.corrupt, ps.labels)
    assert full.faithfulness == pytest.approx(1.0, abs=1e-5) and full.recovery == pytest.approx(1.0, abs=1e-4)
    assert empty.faithfulness == pytest.approx(corrupt / clean, abs=1e-4)
    assert empty.recovery == pytest.approx(0.0, abs=1e-4)
    assert mid.n_edges == n // 4 and mid.share == pytest.approx(mid.n_edges / n)


def test_mean_ablation_runs_and_differs_from_ppr(tiny_ws, tiny_rec):
    runner = GraphRunner(load_bridge(tiny_rec), tiny_rec)
    mean = attribute(runner, _prompts(tiny_ws, tiny_rec, n=8, corruption="mean"), AttributionConfig("eap"))
    ppr = attribute(runner, _prompts(tiny_ws, tiny_rec, n=8), AttributionConfig("eap"))
    assert mean.clean_metric == pytest.approx(ppr.clean_metric)
    assert not torch.allclose(mean.edges, ppr.edges)


def test_discovery_is_cached_relabels_for_free_and_round_trips(tiny_ws, tiny_rec, monkeypatch):
    forget = tiny_ws.forget_set("users:0.2")
    settings = CircuitSettings(n_prompts=12, stability_seeds=2, batch_size=12, ig_steps=2)
    result = discover_circuits(tiny_ws, tiny_rec, forget, settings)
    assert result.path is not None and (result.path / "circuit.json").is_file()
    table = recommender_table(tiny_rec)
    assert list(result.labels) == table.scored  # roles, heads, MLPs, item rows
    assert set(table.modules) <= set(result.labels) and set(table.roles) <= set(result.labels)
    assert (result.path / "scores.safetensors").is_file()
    stability = result.stability()
    assert set(stability.jaccard) == {g.value for g in Group} and len(stability.sizes["inactive"]) == 2
    assert stability.main == "prompt seed" and stability.jaccard == stability.by_draw["prompt seed"].jaccard
    j = result.to_json()
    assert {"nodes", "edges", "faithfulness", "agreement", "stability", "seconds", "groups", "coverage"} <= set(j)
    assert sum(j["groups"].values()) == len(table.scored)
    assert j["coverage"]["forget_grad_share"] == pytest.approx(1.0)  # every parameter has an owner
    kinds = {n["kind"] for n in j["nodes"]}
    assert {"embedding", "head", "mlp", "item-row"} <= kinds
    spec = next(n for n in j["nodes"] if n["name"] == "m0")["specificity"]
    assert spec["low"] <= spec["estimate"] <= spec["high"]
    assert j["faithfulness"]["at_circuit"]["recovery"] >= settings.target or j["faithfulness"]["at_circuit"]["share"] == 1
    assert -1 <= j["agreement"]["spearman_vs_patching"] <= 1
    # a second call loads the stored result instead of computing it
    import analysis.circuits.discover as discover

    monkeypatch.setattr(discover, "compute_circuits", lambda *a, **k: pytest.fail("recomputed"))
    again = discover_circuits(tiny_ws, tiny_rec, forget, settings)
    assert again.to_json()["edges"] == j["edges"]
    strict = discover_circuits(tiny_ws, tiny_rec, forget, settings, GroupThresholds(1e9, 1e9, rule="threshold"))
    assert set(strict.labels.values()) == {Group.INACTIVE}
    floor = discover_circuits(tiny_ws, tiny_rec, forget, settings, GroupThresholds(floor=1e9))
    assert set(floor.labels.values()) == {Group.INACTIVE}
    # the graph survives networkx node-link JSON
    back = CircuitGraph.from_node_link(json.loads(json.dumps(again.graph.to_node_link())))
    torch.testing.assert_close(back.scores, again.graph.scores)
    assert torch.equal(back.in_circuit, again.graph.in_circuit)
    assert CircuitResult.from_json(json.loads(json.dumps(j)), result.path, table).to_json()["nodes"] == j["nodes"]


def test_at_scale_discovery_scores_a_capped_request_and_patches_a_sample_of_nodes(tiny_ws, tiny_rec, monkeypatch):
    """--request-samples caps the whole-request input scoring per side; --patch-check checks a seeded
    sample of heads and MLPs against exact patching, and the agreement is over exactly those. Neither
    enters the key unless set, so discoveries stored before them keep their keys."""
    import analysis.circuits.engine as engine

    assert "request_samples" not in CircuitSettings().key() and "patch_check" not in CircuitSettings().key()
    sizes = []
    real = engine.input_scores
    monkeypatch.setattr(engine, "input_scores", lambda runner, scorer, prompts, *a, **k: (
        sizes.append(len(prompts)), real(runner, scorer, prompts, *a, **k))[1])
    settings = CircuitSettings(n_prompts=6, stability_seeds=1, retain_samples=1, batch_size=4, ig_steps=2,
                               request_samples=10, patch_check=3)
    forget = tiny_ws.forget_set("users:0.2")
    assert len(forget.forget_samples) > 10  # so the cap bites
    j = discover_circuits(tiny_ws, tiny_rec, forget, settings).to_json()
    assert sizes and max(sizes) == 10
    up = CircuitGraph.from_shape(tiny_rec.model.config.n_layer, tiny_rec.model.config.n_head).upstream
    checked = [n for n in up[1:] if n in j["attribution"]["patched"]["forget"]]
    assert len(checked) == 3 and j["agreement"]["by_side"]["n_graph_nodes"] == 3
    with pytest.raises(SettingsError, match="at least 1"):
        CircuitSettings(patch_check=0)


def test_bad_settings_are_clear_errors():
    with pytest.raises(SettingsError, match="unknown method"):
        CircuitSettings(method="magic")
    with pytest.raises(SettingsError, match="unknown corruption"):
        CircuitSettings(corruption="noise")
    with pytest.raises(SettingsError, match="at least 1"):
        CircuitSettings(n_prompts=0)
