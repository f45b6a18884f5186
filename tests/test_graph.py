"""The circuit graph as tensors: shape, allowed edges, top-n selection, JSON round trip."""
from __future__ import annotations

import json

import pytest
import torch

from analysis.circuits.graph import CircuitGraph


def expected_edges(L: int, H: int) -> int:
    """Counted by hand: each reader sees input plus every writer before it."""
    total = 0
    for layer in range(L):
        writers_before_heads = 1 + layer * (H + 1)
        total += H * writers_before_heads  # each head of this layer
        total += writers_before_heads + H  # this layer's MLP also sees its layer's heads
    total += 1 + L * (H + 1)  # logits see everything
    return total


@pytest.mark.parametrize("L, H", [(1, 1), (2, 3), (4, 4), (4, 8)])
def test_node_and_edge_counts_match_the_architecture(L, H):
    g = CircuitGraph.from_shape(L, H)
    assert len(g.upstream) == 1 + L * (H + 1)
    assert len(g.downstream) == L * (H + 1) + 1
    assert g.n_edges == expected_edges(L, H)


def test_residual_stream_rules():
    g = CircuitGraph.from_shape(2, 2)
    up, down = g.upstream.index, g.downstream.index
    assert g.allowed[up("input"), down("a0.h0")]
    assert g.allowed[up("a0.h1"), down("m0")]  # MLP reads after its layer's attention
    assert not g.allowed[up("a0.h0"), down("a0.h1")]  # heads of a layer run in parallel
    assert not g.allowed[up("m0"), down("m0")]
    assert not g.allowed[up("m1"), down("a1.h0")]
    assert g.allowed[up("m1"), down("logits")]


def test_top_n_and_node_link_round_trip():
    g = CircuitGraph.from_shape(2, 2)
    torch.manual_seed(0)
    g.scores = torch.where(g.allowed, torch.randn(g.allowed.shape), torch.zeros(g.allowed.shape))
    g.select_top(5)
    assert int(g.in_circuit.sum()) == 5
    kept = sorted(abs(s) for _, _, s in g.edge_list(only_circuit=True))
    rest = [abs(s) for (_, _, s), m in zip(g.edge_list(), g.in_circuit[g.allowed].tolist()) if not m]
    assert min(kept) >= max(rest)
    back = CircuitGraph.from_node_link(json.loads(json.dumps(g.to_node_link())))
    assert back.upstream == g.upstream and back.downstream == g.downstream
    torch.testing.assert_close(back.scores, g.scores)
    assert torch.equal(back.in_circuit, g.in_circuit)


def test_round_trip_rejects_an_impossible_edge():
    data = CircuitGraph.from_shape(1, 1).to_node_link()
    data["edges"].append({"source": "m0", "target": "a0.h0", "score": 1.0})
    with pytest.raises(ValueError, match="not allowed"):
        CircuitGraph.from_node_link(data)
