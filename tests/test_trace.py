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
