"""Scoring the whole request: the fast input path against the graph runner (two implementations), the
batched PageRank against networkx, the user-level bootstrap, false-discovery control, scored targets,
presence, and the null request."""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import numpy as np
import pytest
import torch

from analysis.circuits.attribution import AttributionConfig, AttributionMethod, attribute
from analysis.circuits.corrupt import build_prompt_set, personalized_pagerank, user_item_graph
from analysis.circuits.describe import describe
from analysis.circuits.discover import CircuitSettings
from analysis.circuits.groups import Group, GroupThresholds, SideScores, decide, label_by_specificity, specificity
from analysis.circuits.lean import discover_groups
from analysis.circuits.ownership import recommender_table
from analysis.circuits.request import InputScorer, input_scores, prompt_presence
from analysis.circuits.runner import GraphRunner
from analysis.circuits.sampling import request_sides, retain_samples
from analysis.circuits.trace import load_bridge
from analysis.model.sequences import PromptBuilder
from analysis.model.train import train_recommender
from tests.conftest import TINY_MODEL, TINY_TRAIN
from tests.test_circuits import _prompts


@pytest.fixture
def tiny_rec(tiny_ws):
    return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)


@pytest.fixture
def runner(tiny_ws, tiny_rec):
    return GraphRunner(load_bridge(tiny_rec), tiny_rec, recommender_table(tiny_rec))


@pytest.mark.parametrize("method,steps", [(AttributionMethod.EAP, 1), (AttributionMethod.EAP_IG, 3)])
def test_fast_input_scores_equal_the_graph_runners_input_split(tiny_ws, tiny_rec, runner, method, steps):
    """HF gradient at the token embeddings vs TransformerLens per-reader gradients summed: the same number."""
    ps = _prompts(tiny_ws, tiny_rec, n=10)
    table = runner.table
    a = attribute(runner, ps, AttributionConfig(method, ig_steps=steps, batch_size=4))
    n_roles, n_mod = len(table.roles), len(table.modules)
    reference = torch.cat([a.per_prompt[:, :n_roles], a.per_prompt[:, n_roles + n_mod : n_roles + n_mod + len(table.item_rows)]], 1)
    fast = input_scores(runner, InputScorer(tiny_rec), ps, method, steps, batch_size=3)
    assert float(reference.abs().max()) > 0.01  # not vacuous
    torch.testing.assert_close(fast, reference, atol=2e-5, rtol=1e-4)


def test_batched_pagerank_equals_networkx(tiny_ws):
    graph = user_item_graph(tiny_ws.interactions)
    users = [n for n in graph if n.startswith("u")][:3]
    ours = personalized_pagerank(graph, users)
    names = list(graph)
    for k, u in enumerate(users):
        ref = nx.pagerank(graph, alpha=0.85, personalization={u: 1.0})
        assert np.abs(ours[k] - np.array([ref[n] for n in names])).max() < 1e-9


def _clustered(n_users=30, per_user=10, seed=0):
    """Per-prompt scores of 4 nodes for n_users users; every node alike on both sides."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    return torch.tensor(np.abs(1 + 0.1 * rng.standard_normal((len(users), 4)))), users


def test_one_user_with_many_prompts_cannot_make_a_node_specific():
    forget, f_users = _clustered()
    retain, r_users = _clustered(seed=1)
    # one forget user has 200 prompts on which node 0 is huge: by prompts a tight ratio, by users one witness
    heavy = torch.tensor(np.abs(1 + 0.1 * np.random.default_rng(2).standard_normal((200, 4))))
    heavy[:, 0] *= 30
    forget = torch.cat([forget, heavy])
    f_users = np.concatenate([f_users, np.full(200, 999)])
    families = np.zeros(4, dtype=int)
    th = GroupThresholds(tau=2.0, resamples=500)
    by_prompt = specificity(forget, retain, families, 500)
    assert label_by_specificity(list("abcd"), by_prompt, th)["a"] is Group.FORGET  # what resampling prompts said
    by_user = specificity(SideScores.from_prompts(forget, f_users), SideScores.from_prompts(retain, r_users), families, 500)
    assert by_user.estimate[0] > np.log(2)  # the mean ratio is still large...
    assert label_by_specificity(list("abcd"), by_user, th)["a"] is not Group.FORGET  # ...but one user is no evidence
    # many users each a little more: specific under the user bootstrap too
    forget2, f2_users = _clustered(seed=3)
    forget2[:, 0] *= 4
    spec = specificity(SideScores.from_prompts(forget2, f2_users), SideScores.from_prompts(retain, r_users), families, 500)
    assert label_by_specificity(list("abcd"), spec, th)["a"] is Group.FORGET


def test_false_discoveries_are_controlled_on_a_synthetic_null():
    """400 nodes, both sides from one distribution: per-node tests at 5% find some, BH finds none."""
    rng = np.random.default_rng(0)
    n_nodes, users = 400, np.repeat(np.arange(40), 5)
    draw = lambda: torch.tensor(np.abs(rng.lognormal(0, 1.0, (len(users), n_nodes))))  # noqa: E731
    spec = specificity(SideScores.from_prompts(draw(), users), SideScores.from_prompts(draw(), users),
                       np.zeros(n_nodes, dtype=int), 400)
    th = GroupThresholds(tau=1.0, floor=0.0, resamples=400, fdr=0.05)
    p_forget, p_retain = spec.p_values(th.tau)
    assert (p_forget < 0.05).sum() + (p_retain < 0.05).sum() > 5  # uncorrected tests do find "specific" nodes
    labels = label_by_specificity([str(i) for i in range(n_nodes)], spec, th)
    assert not {Group.FORGET, Group.RETAIN} & set(labels.values())
    assert decide(spec, th).tested == 2 * n_nodes


def test_presence_gates_item_rows():
    forget, f_users = _clustered()
    retain, r_users = _clustered(seed=1)
    forget[:, 0] *= 8
    spec = specificity(SideScores.from_prompts(forget, f_users), SideScores.from_prompts(retain, r_users),
                       np.zeros(4, dtype=int), 300)
    th = GroupThresholds(resamples=300, min_users=5)
    assert label_by_specificity(list("abcd"), spec, th, np.full(4, 30), np.full(4, 30))["a"] is Group.FORGET
    few = np.array([4, 30, 30, 30])  # seen in the prompts of 4 forget users only
    assert label_by_specificity(list("abcd"), spec, th, few, np.full(4, 30))["a"] is not Group.FORGET


def test_replacing_the_target_scores_target_rows(tiny_ws, tiny_rec, runner):
    rows = tiny_ws.interactions.split("train").sample(12, random_state=0)
    builder = PromptBuilder(tiny_rec.fmt, tiny_ws.interactions)
    scorer = InputScorer(tiny_rec)
    table = runner.table
    n_roles = len(table.roles)
    out = {}
    for replace_target in (False, True):
        ps = build_prompt_set(builder, rows, "ppr", seed=0, replace_target=replace_target)
        assert all(len(c) == len(k) for c, k in zip(ps.clean, ps.corrupt))
        out[replace_target] = input_scores(runner, scorer, ps, AttributionMethod.EAP, 1, 6)
    for i, (user, pos, target) in enumerate(zip(rows["user_id"], rows["pos"], rows["item_id"])):
        history, _ = builder.history_at(int(user), int(pos))
        if int(target) in set(history.tolist()) or f"row:{int(target)}" not in table.item_rows:
            continue
        col = n_roles + table.item_rows.index(f"row:{int(target)}")
        assert float(out[False][i, col]) == 0.0  # a kept target is the same on both sides: 0 by construction
        assert float(out[True][i, col]) != 0.0


def test_presence_counts_users_not_prompts(tiny_ws, tiny_rec, runner):
    ps = _prompts(tiny_ws, tiny_rec, n=20)
    counts = prompt_presence(runner, ps)
    user_of = ps.rows["user_id"].to_numpy()
    col = int(np.argmax(counts))
    holders = {int(u) for u, toks in zip(user_of, ps.clean) if (runner.item_column[torch.as_tensor(toks)] == col).any()}
    assert counts[col] == len(holders) > 0


def test_null_request_draws_both_sides_from_the_retained_population(tiny_ws):
    forget = tiny_ws.forget_set("users:0.1")
    sides = request_sides(tiny_ws, forget, null=True)
    retained = retain_samples(tiny_ws, forget)
    assert not set(sides.forget_rows["user_id"]) & set(forget.users)
    assert len(sides.forget_rows) == len(forget.forget_samples)
    key = lambda f: set(zip(f["user_id"], f["pos"]))  # noqa: E731
    assert key(sides.forget_rows) <= key(retained) and not key(sides.forget_rows) & key(sides.retain_pool)
    real = request_sides(tiny_ws, forget)
    assert key(real.forget_rows) == key(forget.forget_samples)


def test_lean_discovery_scores_the_whole_request_and_describes_it(tiny_ws, tiny_rec):
    forget = tiny_ws.forget_set("users:0.1")
    settings = CircuitSettings(n_prompts=8, ig_steps=2, batch_size=8)
    groups = discover_groups(tiny_ws, tiny_rec, forget, settings).node_groups
    draw = groups.draws[0]
    assert draw.forget[0].n_prompts == len(forget.forget_samples)  # every forget sample, not a sample of them
    assert draw.forget[1].n_prompts == min(8, len(forget.forget_samples))  # heads and MLPs: the sample
    assert draw.retain[0].n_prompts == len(forget.forget_samples)  # as many retain samples
    sentences = [s.sentence for s in describe(groups)]
    assert sentences[0].startswith("forget-specific:") and len(sentences) == 3
    view = groups.node_view(groups.names.index(groups.names[-1]))
    assert view.name == groups.names[-1] and view.group == groups.labels[view.name].value
    assert view.presence.forget >= 0 and view.specificity.low <= view.specificity.estimate <= view.specificity.high
    assert set(view.to_json()["presence"]) == {"forget", "retain"} and "q_forget" in view.to_json()["specificity"]
    null = discover_groups(tiny_ws, tiny_rec, forget, replace(settings, null=True)).node_groups
    assert null.draws[0].forget[0].n_prompts == len(forget.forget_samples)
