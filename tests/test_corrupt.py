"""Counterfactual prompts: same length and vocabulary, only the history moves, seeded."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.circuits.corrupt import Corruption, build_prompt_set, user_item_graph
from analysis.model.prompts import build_word_tokenizer, make_format
from analysis.model.sequences import PromptBuilder


@pytest.fixture
def builder(tiny_ws):
    tokenizer = build_word_tokenizer(tiny_ws.data)
    return PromptBuilder(make_format("word", tokenizer, tiny_ws.data), tiny_ws.interactions)


@pytest.fixture
def rows(tiny_ws):
    return tiny_ws.interactions.split("train").sample(40, random_state=0)


def _history_slots(builder, prompt):
    """Token positions of the history items and ratings in a word-level prompt."""
    start = len(builder.prefix(min(builder.interactions.user_ids)))  # same length for every user with attributes
    n = builder.history
    return list(range(start, start + 2 * n, 2)), list(range(start + 1, start + 2 * n, 2))


@pytest.mark.parametrize("corruption", ["ppr", "ppr-items", "random", "shuffle"])
def test_corruption_keeps_length_prefix_target_and_vocabulary(builder, rows, corruption):
    ps = build_prompt_set(builder, rows, corruption, seed=3)
    items = {builder.fmt.item_ids(i)[0] for i in builder.interactions.data.items["item_id"]}
    ratings = {builder.fmt.rating_ids(r)[0] for r in (1, 2, 3, 4, 5)}
    assert len(ps) == len(rows) and ps.corrupt is not None
    changed = 0
    for clean, corrupt in zip(ps.clean, ps.corrupt):
        assert len(clean) == len(corrupt)
        item_pos, rating_pos = _history_slots(builder, clean)
        outside = set(range(len(clean))) - set(item_pos) - set(rating_pos)
        assert all(clean[p] == corrupt[p] for p in outside)  # prefix and target untouched
        assert all(corrupt[p] in items for p in item_pos)
        assert all(corrupt[p] in ratings for p in rating_pos)
        if corruption != "ppr":
            assert [clean[p] for p in rating_pos] == [corrupt[p] for p in rating_pos]
        if corruption in ("ppr", "ppr-items", "random"):  # fresh items: none from the clean history or the target
            assert not {corrupt[p] for p in item_pos} & ({clean[p] for p in item_pos} | {clean[-1]})
        else:
            assert sorted(clean[p] for p in item_pos) == sorted(corrupt[p] for p in item_pos)
        changed += clean != corrupt
    assert changed >= len(rows) * 0.9


def test_corruption_is_seeded(builder, rows):
    a = build_prompt_set(builder, rows, "ppr", seed=1)
    b = build_prompt_set(builder, rows, "ppr", seed=1)
    c = build_prompt_set(builder, rows, "ppr", seed=2)
    assert a.corrupt == b.corrupt and a.corrupt != c.corrupt
    assert a.clean == builder.prompts(rows)  # the clean side is the canonical prompt


def test_ppr_draws_from_the_donor_neighbourhood(tiny_ws, builder):
    """PPR mass concentrates on items near the donor: its own rated items outrank unrelated ones."""
    from analysis.circuits.corrupt import PPRSampler

    graph = user_item_graph(tiny_ws.interactions)
    sampler = PPRSampler(graph, [1])
    items, mass = sampler.distribution(1)
    assert mass.sum() == pytest.approx(0.5, abs=0.1)  # bipartite walk: about half the mass sits on items
    rated = {int(n[1:]) for n in graph["u1"]}
    own = mass[np.isin(items, list(rated))].mean()
    other = mass[~np.isin(items, list(rated))].mean()
    assert own > 5 * other
    rng = np.random.default_rng(0)
    assert all(sampler.rating(1, i, rng) in (1.0, 2.0, 3.0, 4.0, 5.0) for i in list(rated)[:20])


def test_mean_ablation_has_no_corrupted_prompts(builder, rows):
    ps = build_prompt_set(builder, rows, Corruption.MEAN)
    assert ps.corrupt is None and len(ps.clean) == len(rows)
    assert set(ps.labels.tolist()) <= {0, 1}


def test_title_prompts_keep_their_length(tiny_ws, tmp_path, rows):
    """Multi-token titles: each slot gets an item with the same token count."""
    from analysis.model.train import train_recommender
    from tests.conftest import TINY_MODEL, TINY_TRAIN
    from tests.test_model import _tiny_pretrained_backbone

    backbone = _tiny_pretrained_backbone(tmp_path / "gpt2-tiny", tiny_ws.data.items["title"].head(300))
    rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN, backbone=backbone)
    ps = build_prompt_set(PromptBuilder(rec.fmt, tiny_ws.interactions), rows.head(10), "ppr", seed=0)
    assert [len(c) for c in ps.clean] == [len(c) for c in ps.corrupt]
    assert ps.clean != ps.corrupt
