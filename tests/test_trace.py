"""TransformerBridge tracing: hooks fire, scores match the HF model, patching a head matters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.circuits.trace import hook_z, load_bridge, trace_prompts
from analysis.model.sequences import PromptBuilder
from analysis.model.train import train_recommender
from tests.conftest import TINY_MODEL, TINY_TRAIN


@pytest.fixture
def traced(tiny_ws):
    rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    prompts = PromptBuilder(rec.fmt, tiny_ws.interactions).prompts(tiny_ws.interactions.split("test").head(6))
    bridge = load_bridge(rec)
    return rec, bridge, prompts, trace_prompts(bridge, rec, prompts, batch_size=4)


def test_trace_shapes_and_scores_match_the_hf_model(traced):
    rec, bridge, prompts, trace = traced
    L, H, d = TINY_MODEL.n_layer, TINY_MODEL.n_head, TINY_MODEL.d_model
    assert trace.head_z.shape == (6, L, H, d // H)
    assert trace.mlp_out.shape == (6, L, d) and trace.resid_pre.shape == (6, L, d)
    assert trace.patterns.shape[:3] == (6, L, H)
    # attention of the answer position is a distribution over the prompt
    torch.testing.assert_close(trace.patterns.sum(-1), torch.ones(6, L, H), atol=1e-5, rtol=0)
    np.testing.assert_allclose(trace.scores.numpy(), rec.score_prompts(prompts), atol=1e-4)


def test_patching_one_head_changes_the_score(traced):
    rec, bridge, prompts, trace = traced
    tokens = torch.tensor(prompts[:2])
    rec_yes, rec_no = rec.fmt.yes_id, rec.fmt.no_id

    def zero_head(z, hook):
        z[:, :, 0] = 0.0
        return z

    with torch.no_grad():
        clean = bridge(tokens)[:, -1]
        patched = bridge.run_with_hooks(tokens, fwd_hooks=[(hook_z(0), zero_head)])[:, -1]
    clean_score = clean[:, rec_yes] - clean[:, rec_no]
    patched_score = patched[:, rec_yes] - patched[:, rec_no]
    assert (clean_score - patched_score).abs().max() > 1e-4
    np.testing.assert_allclose(clean_score.numpy(), trace.scores[:2].numpy(), atol=1e-4)


def test_direct_effects_add_up_to_the_score_and_labels_name_items(tiny_ws):
    from analysis.circuits.trace import token_labels, trace_one
    from analysis.recommend import candidate_prompt

    rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    prompt = candidate_prompt(rec, tiny_ws, 1, 50)
    traced = trace_one(load_bridge(rec), rec, prompt)
    assert traced.score == pytest.approx(float(rec.score_prompts([prompt])[0]), abs=1e-4)
    node_effects = {k: v for k, v in traced.direct.items() if k != "biases"}
    assert set(node_effects) >= {"input", "a0.h0", "m1"}
    assert sum(node_effects.values()) + traced.direct["biases"] == pytest.approx(traced.score, abs=1e-5)
    # the bias term is small next to the modules: the linearisation is what carries the score
    assert abs(traced.direct["biases"]) < sum(abs(v) for v in node_effects.values())
    L, H = TINY_MODEL.n_layer, TINY_MODEL.n_head
    assert traced.patterns.shape == (L, H, len(prompt), len(prompt))
    labels = token_labels(rec, traced.tokens, tiny_ws.title)
    assert labels[-1].endswith(tiny_ws.title(50)) and len(labels) == len(prompt)


def test_rank_changes_report_where_each_item_was_before(tiny_ws):
    from analysis.recommend import rank_changes, top_k

    rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    same = rank_changes(rec, rec, tiny_ws, 1, k=5)
    assert [r.change for r in same] == [0] * 5 and [r.rank_before for r in same] == [1, 2, 3, 4, 5]
    assert [r.item_id for r in same] == [r.item_id for r in top_k(rec, tiny_ws, 1, 5)]
    assert all(r.rank_retrain is None for r in same)  # no retrain given
    other = train_recommender(tiny_ws, tiny_ws.forget_set("users:1"), TINY_MODEL, TINY_TRAIN)
    with_gold = rank_changes(rec, rec, tiny_ws, 1, k=5, gold=other)
    gold_ranks = {r.item_id: r.rank for r in top_k(other, tiny_ws, 1, len(tiny_ws.interactions.item_ids))}
    assert [r.rank_retrain for r in with_gold] == [gold_ranks[r.item_id] for r in with_gold]
