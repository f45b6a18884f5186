"""The Pareto front of (forgetting, utility) points: lower x and higher y are better; and the ranking of runs."""
from __future__ import annotations


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a is at least as good as b on both axes (x lower, y higher) and strictly better on one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (ties are all kept), in input order."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def rank_runs(distances: list[float | None], costs: list[float]) -> list[int]:
    """Indices best first: by Pareto layer on (retrain distance, utility cost), both lower better, then by
    distance, then cost. A run without a distance (no measurable gap) ranks last. Over-forgetting cannot
    win: distance counts overshooting the retrain like falling short of it."""
    scored = [i for i, d in enumerate(distances) if d is not None]
    layer, left, depth = {}, list(scored), 0
    while left:
        front = pareto_front([(distances[i], -costs[i]) for i in left])
        for j in front:
            layer[left[j]] = depth
        left = [i for k, i in enumerate(left) if k not in set(front)]
        depth += 1
    ordered = sorted(scored, key=lambda i: (layer[i], distances[i], costs[i]))
    return ordered + [i for i, d in enumerate(distances) if d is None]
