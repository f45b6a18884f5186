"""Faithfulness of circuits: how much of the full model's metric survives outside-circuit corruption.

faithfulness(C) = M(every edge outside C fed its corrupted value) / M(full model), so the
full graph scores 1 and the empty circuit scores M(corrupted run) / M(full). When the
corruption only moves the metric a little, that ratio is high for *any* circuit, so we
also report recovery(C) = (M(C) - M(corrupted)) / (M(full) - M(corrupted)), which is 0 for
the empty circuit and 1 for the full graph, and circuits are chosen on recovery by default.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..progress import ProgressFn
from .attribution import patch_effects
from .corrupt import PromptSet
from .graph import CircuitGraph
from .runner import GraphRunner

CURVE_SHARES = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


@dataclass
class CurvePoint:
    n_edges: int
    share: float  # of all edges
    faithfulness: float
    recovery: float

    def as_dict(self) -> dict:
        return {"n_edges": self.n_edges, "share": self.share, "faithfulness": self.faithfulness,
                "recovery": self.recovery}


def top_edges(graph: CircuitGraph, scores: torch.Tensor, n: int) -> torch.Tensor:
    """Membership mask of the n allowed edges with the largest |score|."""
    g = CircuitGraph.from_shape(graph.n_layers, graph.n_heads)
    g.scores = scores
    g.select_top(n)
    return g.in_circuit


def circuit_points(runner: GraphRunner, prompts: PromptSet, scores: torch.Tensor, sizes: list[int],
                   batch_size: int = 64, progress: ProgressFn | None = None) -> list[CurvePoint]:
    """Faithfulness and recovery of the top-n circuits for each n in `sizes` (one pass over the prompts)."""
    graph = runner.graph
    sizes = sorted(set(min(max(int(n), 0), graph.n_edges) for n in sizes))
    masks = [graph.allowed & ~top_edges(graph, scores, n) for n in sizes] + [graph.allowed.clone()]
    effects, clean = patch_effects(runner, prompts, masks, batch_size, progress, "faithfulness")
    corrupt = clean - float(effects[-1])
    points = []
    for n, effect in zip(sizes, effects[:-1].tolist()):
        metric = clean - effect
        points.append(CurvePoint(n, n / graph.n_edges, _ratio(metric, clean),
                                 _ratio(metric - corrupt, clean - corrupt)))
    return points


def _ratio(a: float, b: float) -> float:
    return float(a / b) if abs(b) > 1e-12 else float("nan")


def faithfulness_curve(runner: GraphRunner, prompts: PromptSet, scores: torch.Tensor,
                       shares: tuple[float, ...] = CURVE_SHARES, batch_size: int = 64,
                       progress: ProgressFn | None = None) -> list[CurvePoint]:
    n = runner.graph.n_edges
    return circuit_points(runner, prompts, scores, [round(s * n) for s in shares], batch_size, progress)


def smallest_circuit(runner: GraphRunner, prompts: PromptSet, scores: torch.Tensor, curve: list[CurvePoint],
                     target: float, criterion: str = "recovery", batch_size: int = 64,
                     progress: ProgressFn | None = None) -> CurvePoint:
    """The smallest top-n circuit whose `criterion` reaches `target`, by bisection inside the curve.

    Bisection assumes the criterion grows with n between the two bracketing curve points;
    the returned point is always measured, never interpolated.
    """
    value = lambda p: getattr(p, criterion)  # noqa: E731
    reached = [p for p in curve if value(p) >= target]
    if not reached:
        return curve[-1]
    hi = reached[0]
    below = [p for p in curve if p.n_edges < hi.n_edges]
    lo_n = below[-1].n_edges if below else -1
    while hi.n_edges - lo_n > 1:
        mid = (lo_n + hi.n_edges) // 2
        point = circuit_points(runner, prompts, scores, [mid], batch_size, progress)[0]
        if value(point) >= target:
            hi = point
        else:
            lo_n = mid
    return hi
