"""The node table: ownership as a partition, embedding roles and item rows against exact patching,
the bootstrap specificity rule, and CURE over item rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.circuits.attribution import AttributionConfig, attribute, patch_embedding_nodes
from analysis.circuits.groups import Group, GroupThresholds, group_stability, label_by_specificity, specificity
from analysis.circuits.nodes import Kind, graph_table
from analysis.circuits.ownership import node_table, ownership_count, recommender_table
from analysis.circuits.runner import GraphRunner
from analysis.circuits.trace import load_bridge
from analysis.model.train import train_recommender
from analysis.unlearn.methods import RetainSpecific, circuit_rules
from analysis.unlearn.modules import flat
from tests.conftest import TINY_MODEL, TINY_TRAIN
from tests.test_circuits import _prompts, _squashed


@pytest.fixture
def tiny_rec(tiny_ws):
    return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)


def _llama(tied: bool, n_kv: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=64,
                                        tie_word_embeddings=tied))


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=4))


@pytest.mark.parametrize("make", [_gpt2, lambda: _llama(False), lambda: _llama(True)],
                         ids=["gpt2", "llama", "llama-tied"])
def test_every_parameter_element_is_owned_exactly_once(make):
    model = make()
    table = node_table(model)
    counts = ownership_count(model, table)
    for name, c in counts.items():
        assert int(c.min()) == 1 and int(c.max()) == 1, name
    assert set(table.owners) >= set(table.modules) | {"logits"}
    for block in table.blocks:  # every owner is a node of the table
        assert all(o in table for o in block.owners)


def test_word_recommender_splits_the_embedding_into_roles_and_item_rows(tiny_rec, tiny_ws):
    table = recommender_table(tiny_rec)
    counts = ownership_count(tiny_rec.model, table)
    assert all(int(c.min()) == 1 and int(c.max()) == 1 for c in counts.values())
    vocab = tiny_rec.tokenizer.get_vocab()
    wte = "transformer.wte.weight"
    row_owner = {}
    for b in table.blocks:
        for s in b.slices:
            if s.param == wte:
                for r in range(s.start, s.start + s.length):
                    row_owner[r] = b.owners
    assert row_owner[vocab["item_50"]] == ("row:50",)
    assert row_owner[vocab[next(w for w in vocab if w.startswith("★"))]] == ("emb:ratings",)
    assert row_owner[vocab[next(w for w in vocab if w.startswith("occupation:"))]] == ("emb:attributes",)
    # tied embeddings: Yes/No rows are the unembedding direction the score reads
    assert row_owner[tiny_rec.fmt.yes_id] == ("logits",) and row_owner[tiny_rec.fmt.no_id] == ("logits",)
    assert row_owner[vocab["user"]] == ("emb:words",)
    assert table["emb:positions"].kind is Kind.ROLE and table["row:50"].kind is Kind.ITEM_ROW
    assert table.scored[: len(table.roles)] == table.roles
    # the edge graph reads the same table: input + modules upstream, modules + logits downstream
    assert table.upstream == ["input"] + table.modules and table.downstream == table.modules + ["logits"]


def test_graph_table_round_trip_and_heatmap():
    t = graph_table(2, 3)
    assert [n.name for n in t.of_kind(Kind.HEAD)] == ["a0.h0", "a0.h1", "a0.h2", "a1.h0", "a1.h1", "a1.h2"]
    assert t["m1"].layer == 1 and t["m1"].order == 1.5 and t["a1.h2"].index == 2
    assert t.heatmap({"a1.h2": 0.5, "m0": -1.0}) == [[None, None, None, -1.0], [None, None, 0.5, None]]
    with pytest.raises(ValueError):
        graph_table(0, 2)


def test_roles_and_item_rows_equal_exact_patching_where_first_order_is_exact(tiny_ws, tiny_rec, tmp_path):
    rec = _squashed(tiny_rec, tiny_ws.data, tmp_path / "squashed", eps=1e-3)
    runner = GraphRunner(load_bridge(rec), rec)
    table = runner.table
    ps = _prompts(tiny_ws, rec, n=16)
    n_roles, n_mod = len(table.roles), len(table.modules)
    present = [table.item_rows[c] for c in sorted({int(c) for p in ps.clean for c in runner.item_column[p] if c >= 0})]
    names = table.roles + present[:40]
    exact = patch_embedding_nodes(runner, ps, names, batch_size=8).mean(1)
    assert exact[: n_roles].abs().max() > 1e-5
    for method in ("eap", "eap-ig"):
        a = attribute(runner, ps, AttributionConfig(method, ig_steps=4, batch_size=8))
        means = a.per_prompt.mean(0)
        cols = [table.scored.index(n) for n in names]
        rel = float((means[cols].double() - exact).norm() / exact.norm())
        assert rel < 0.01, (method, rel)
        # roles add up to the input node, item rows to the items role, modules to the upstream nodes
        assert float(means[:n_roles].sum()) == pytest.approx(float(a.nodes[0]), abs=1e-6)
        items = table.roles.index("emb:items")
        assert float(means[n_roles + n_mod :].sum()) == pytest.approx(float(means[items]), abs=1e-6)
        torch.testing.assert_close(means[n_roles : n_roles + n_mod], a.nodes[1:])
    # counterfactuals keep positions, the prefix and the target: those roles score exactly 0
    assert float(exact[table.roles.index("emb:positions")]) == 0.0


def _hand_made(ratio: float, spread: float, n: int = 200, seed: int = 0):
    """Per-prompt scores of 4 nodes; node 0 is `ratio` times more important (share) on forget."""
    rng = np.random.default_rng(seed)
    base = np.array([1.0, 1.0, 1.0, 1.0])
    f = base * np.array([ratio, 1, 1, 1])
    noise = lambda: np.abs(1 + spread * rng.standard_normal((n, 4)))  # noqa: E731
    return torch.tensor(f * noise()), torch.tensor(base * noise())


def test_bootstrap_rule_needs_a_tight_interval_not_just_a_ratio():
    families = np.zeros(4, dtype=int)
    tight_f, tight_r = _hand_made(4.0, spread=0.05)
    spec = specificity(tight_f, tight_r, families, resamples=500)
    assert spec.low[0] > np.log(2) and spec.low[0] <= spec.estimate[0] <= spec.high[0]
    labels = label_by_specificity(list("abcd"), spec, GroupThresholds(tau=2.0))
    assert labels["a"] is Group.FORGET and labels["b"] is Group.SHARED
    # the same mean ratio with scores that are 0 on most prompts and huge on a few: not specific
    rng = np.random.default_rng(1)
    wide_f = tight_f.clone()
    wide_f[:, 0] = torch.tensor(np.where(rng.random(200) < 0.03, 4.0 / 0.03, 0.0))
    wide = specificity(wide_f, tight_r, families, resamples=500)
    assert wide.estimate[0] > np.log(2) and wide.low[0] < np.log(2)
    assert label_by_specificity(list("abcd"), wide, GroupThresholds(tau=2.0))["a"] is not Group.FORGET
    # retain-specific symmetrically
    r_spec = specificity(tight_r, tight_f, families, resamples=500)
    assert label_by_specificity(list("abcd"), r_spec, GroupThresholds(tau=2.0))["a"] is Group.RETAIN


def test_stability_says_empty_instead_of_one():
    a = {"x": Group.SHARED, "y": Group.INACTIVE}
    stab = group_stability([a, dict(a)])
    assert stab["task-shared"] == 1.0 and stab["forget-specific"] is None


def test_cure_moves_a_forget_specific_item_row_and_never_a_frozen_one(tiny_rec):
    table = recommender_table(tiny_rec)
    model = tiny_rec.model
    torch.manual_seed(0)
    g_f = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    g_r = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    rows = table.item_rows
    groups = {rows[0]: Group.FORGET, rows[1]: Group.INACTIVE, rows[2]: Group.RETAIN}
    step = circuit_rules(g_f, g_r, 1.0, table, groups, RetainSpecific.FREEZE)
    owners = table.owners
    torch.testing.assert_close(flat(step.direction, owners[rows[0]]), flat(g_f, owners[rows[0]]))
    for frozen in (rows[1], rows[2], rows[3]):  # inactive, retain-specific (freeze), unlisted
        assert float(flat(step.direction, owners[frozen]).abs().max()) == 0.0
    assert rows[0] in step.updated and rows[1] not in step.updated
    # the logits (final norm, Yes/No rows) are never scored: no group, frozen unless named
    assert float(flat(step.direction, owners["logits"]).abs().max()) == 0.0
    named = circuit_rules(g_f, g_r, 1.0, table, {"logits": Group.SHARED}, RetainSpecific.FREEZE)
    assert float(flat(named.direction, owners["logits"]).abs().max()) > 0


@pytest.mark.parametrize("make", [_gpt2, lambda: _llama(False)], ids=["gpt2", "llama"])
def test_neurons_split_the_mlps_and_ownership_stays_a_partition(make):
    model = make()
    table = node_table(model, neurons=True)
    assert len(table.neurons) == 2 * (128 if model.config.model_type == "gpt2" else 64)
    assert all(int(c.min()) == 1 and int(c.max()) == 1 for c in ownership_count(model, table).values())
    assert "m0" in table.owners  # the MLP keeps ln_2 / post-attention norm (and GPT-2's output bias)


def test_neuron_scores_add_up_to_their_mlp_and_cure_moves_only_a_forget_specific_neuron(tiny_ws, tiny_rec):
    table = recommender_table(tiny_rec, neurons=True)
    runner = GraphRunner(load_bridge(tiny_rec), tiny_rec, table)
    ps = _prompts(tiny_ws, tiny_rec, n=12)
    for method in ("eap", "eap-ig"):
        a = attribute(runner, ps, AttributionConfig(method, ig_steps=2, batch_size=6))
        cols = {n: i for i, n in enumerate(table.scored)}
        for layer in range(table.n_layers):
            units = [cols[n] for n in table.neurons if table[n].layer == layer]
            torch.testing.assert_close(a.per_prompt[:, units].sum(1), a.per_prompt[:, cols[f"m{layer}"]],
                                       atol=1e-4, rtol=1e-3)
    g_f = {n: torch.randn_like(p) for n, p in tiny_rec.model.named_parameters()}
    g_r = {n: torch.randn_like(p) for n, p in tiny_rec.model.named_parameters()}
    step = circuit_rules(g_f, g_r, 1.0, table, {"m1.n3": Group.FORGET}, RetainSpecific.FREEZE)
    moved = {n for n, sl in table.owners.items() if float(flat(step.direction, sl).abs().max()) > 0}
    assert moved == {"m1.n3"}
