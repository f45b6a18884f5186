"""The computational graph of a transformer as tensors (EAP-IG style).

Upstream nodes write to the residual stream: `input` (token + position embeddings),
every head `a{l}.h{h}` and every MLP `m{l}`. Downstream nodes read from it: every head,
every MLP and `logits`. An edge u -> d exists when the residual stream carries u's
output to d's input: u sits in an earlier layer, or u is a head and d the MLP of the
same layer (the MLP reads the stream after attention). Scores and circuit membership
are (n_upstream x n_downstream) tensors; networkx only appears for drawing and export.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch

from .nodes import NodeTable, graph_table, head_name, mlp_name  # noqa: F401 - names re-exported

INPUT, LOGITS = "input", "logits"


@dataclass
class CircuitGraph:
    n_layers: int
    n_heads: int
    upstream: list[str]
    downstream: list[str]
    allowed: torch.Tensor  # bool (n_up, n_down): edges the residual stream permits
    scores: torch.Tensor  # float (n_up, n_down): attribution per edge, 0 where not allowed
    in_circuit: torch.Tensor  # bool (n_up, n_down)

    @classmethod
    def from_shape(cls, n_layers: int, n_heads: int) -> "CircuitGraph":
        return cls.from_table(graph_table(n_layers, n_heads))

    @classmethod
    def from_table(cls, table: NodeTable) -> "CircuitGraph":
        upstream, downstream = list(table.upstream), list(table.downstream)
        up_pos = torch.tensor([table[n].order for n in upstream])
        down_pos = torch.tensor([table[n].order for n in downstream])
        n_layers, n_heads = table.n_layers, table.n_heads
        # u reaches d iff u runs strictly before d: heads of one layer run in parallel
        allowed = up_pos[:, None] < down_pos[None, :]
        zeros = torch.zeros(allowed.shape)
        return cls(n_layers, n_heads, upstream, downstream, allowed, zeros, torch.zeros_like(allowed))

    @property
    def n_edges(self) -> int:
        return int(self.allowed.sum())

    @property
    def nodes(self) -> list[str]:
        return [INPUT] + self.downstream

    def edge_list(self, only_circuit: bool = False) -> list[tuple[str, str, float]]:
        mask = self.allowed & self.in_circuit if only_circuit else self.allowed
        return [(self.upstream[i], self.downstream[j], float(self.scores[i, j]))
                for i, j in torch.nonzero(mask).tolist()]

    def select_top(self, n: int) -> None:
        """Put the n allowed edges with the largest |score| in the circuit."""
        flat = torch.where(self.allowed, self.scores.abs(), torch.full_like(self.scores, -1.0)).flatten()
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        if n > 0:
            chosen[torch.topk(flat, min(n, self.n_edges)).indices] = True
        self.in_circuit = chosen.view_as(self.allowed) & self.allowed

    def to_networkx(self) -> nx.DiGraph:
        g = nx.DiGraph(n_layers=self.n_layers, n_heads=self.n_heads)
        table = graph_table(self.n_layers, self.n_heads)
        for name in self.nodes:
            g.add_node(name, layer=table[name].order)
        for i, j in torch.nonzero(self.allowed).tolist():
            g.add_edge(self.upstream[i], self.downstream[j], score=float(self.scores[i, j]),
                       in_circuit=bool(self.in_circuit[i, j]))
        return g

    def to_node_link(self) -> dict:
        return nx.node_link_data(self.to_networkx(), edges="edges")

    @classmethod
    def from_node_link(cls, data: dict) -> "CircuitGraph":
        g = nx.node_link_graph(data, edges="edges")
        graph = cls.from_shape(int(g.graph["n_layers"]), int(g.graph["n_heads"]))
        up = {n: i for i, n in enumerate(graph.upstream)}
        down = {n: j for j, n in enumerate(graph.downstream)}
        for u, d, attrs in g.edges(data=True):
            i, j = up[u], down[d]
            if not graph.allowed[i, j]:
                raise ValueError(f"edge {u} -> {d} is not allowed by the residual stream")
            graph.scores[i, j] = float(attrs.get("score", 0.0))
            graph.in_circuit[i, j] = bool(attrs.get("in_circuit", False))
        return graph
