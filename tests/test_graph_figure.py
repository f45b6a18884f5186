"""The Circuits page's graph: routed edges never run through a node, item rows on the input side,
the row selection, and the text above the graph (no Streamlit, no model: a result's JSON shape)."""
from __future__ import annotations

import math
import random

import pytest

from analysis.circuits.graph import CircuitGraph
from analysis.circuits.view import CircuitView, DrawStability
from app import circuit_view, figures
from app.state import graph_selection, sync_graph_selection

NODE_RADIUS = 0.03  # layout units (the layout spans [-1, 1]); a drawn node is about this big
ROLES = ["emb:words", "emb:attributes", "emb:items", "emb:ratings", "emb:positions"]


def _node(name: str, kind: str, group: str, estimate: float, label: str | None = None,
          presence: tuple[int, int] = (6, 6)) -> dict:
    return {"name": name, "kind": kind, "label": label or name, "group": group,
            "forget_score": 0.01 * estimate, "retain_score": -0.005, "forget_importance": 0.01,
            "retain_importance": 0.01, "presence": {"forget": presence[0], "retain": presence[1]},
            "specificity": {"estimate": estimate, "low": estimate - 0.5, "high": estimate + 0.5, "half_width": 0.5,
                            "q_forget": None, "q_retain": None,
                            "basis": "presence" if group == "forget-specific" else None}}


def result_json(n_forget_rows: int = 9, n_retain_rows: int = 3, seed: int = 0) -> dict:
    """The parts of CircuitResult.to_json() the page draws from, on the default model's shape (4 layers x 4 heads):
    every edge scored (mixed signs), five roles, and item rows of every group."""
    rng = random.Random(seed)
    g = CircuitGraph.from_shape(4, 4)
    nodes = [{"name": "input", "kind": "input", "label": "input", "group": None, "specificity": None,
              "forget_score": 0.2, "retain_score": 0.1}]
    nodes += [_node(n, "head" if ".h" in n else "mlp", "task-shared", 0.1) for n in g.upstream[1:]]
    nodes += [_node(r, "embedding", "task-shared", 0.05) for r in ROLES]
    nodes += [_node(f"row:{i}", "item-row", "forget-specific", 3.0 + i, f"A Long Forgotten Movie Title {i} (1995)")
              for i in range(n_forget_rows)]
    nodes += [_node(f"row:{100 + i}", "item-row", "retain-specific", -3.0 - i, f"Kept {i} (1990)")
              for i in range(n_retain_rows)]
    nodes += [_node("row:900", "item-row", "inactive", 12.0, "Seen Once (1999)", (1, 0)),
              _node("row:901", "item-row", "task-shared", 0.2, "Everyone's (1977)")]
    edges = []
    for u, v, _ in g.edge_list():
        f, r = rng.uniform(-1, 1), rng.uniform(-1, 1)
        edges.append({"from": u, "to": v, "forget_score": f, "retain_score": r, "score": (f + r) / 2})
    summary = [{"group": grp, "sentence": f"{grp}: a sentence."} for grp in ("forget-specific", "retain-specific",
                                                                          "task-shared")]
    return {"nodes": nodes, "edges": edges, "summary": summary, "tested": 46, "targets_scored": False,
            "thresholds": {"rule": "specificity", "tau": 2.0, "floor": 0.5, "fdr": 0.05, "min_users": 5,
                           "level": 0.95, "forget": 0.5, "retain": 0.5}}


def page_graph(j: dict | None = None):
    view = CircuitView.from_json(j or result_json())
    base = CircuitGraph.from_shape(4, 4).to_networkx()
    for e in view.edges:
        base.edges[e.source, e.target]["score"] = e.score
    return circuit_view.build_graph(base, view)


def seg_distance(p, a, b) -> float:
    """Distance from point p to the segment a-b."""
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    t = 0.0 if dx == dy == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def closest_stranger(path, pos, ends) -> tuple[float, str]:
    """The nearest approach of a polyline to a node that is not one of its endpoints."""
    return min((seg_distance(pos[n], a, b), n) for a, b in zip(path, path[1:]) for n in pos if n not in ends)


def test_a_straight_line_across_columns_runs_through_nodes_and_the_check_sees_it():
    graph, _ = page_graph()
    pos = figures.circuit_layout(graph)
    # the old drawing: m0 -> logits straight along y = 0, through m1, m2 and m3
    gap, stranger = closest_stranger([pos["m0"], pos["logits"]], pos, {"m0", "logits"})
    assert gap < NODE_RADIUS and stranger in {"m1", "m2", "m3"}


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_every_edge_of_the_page_graph_keeps_clear_of_every_node_it_does_not_join(sign):
    graph, _ = page_graph()
    pos, column_of = figures.circuit_layout(graph), figures.column_index(graph)
    assert graph.number_of_edges() == 207 + len(ROLES) + 9 * 5  # task graph, role -> input, 9 drawn rows x layer 0
    routed = 0
    for u, v in graph.edges:
        path = figures.route_edge(pos, column_of, u, v, sign)
        assert path[0] == pos[u] and path[-1] == pos[v]
        gap, stranger = closest_stranger(path, pos, {u, v})
        assert gap > NODE_RADIUS, (u, v, stranger, gap)
        if abs(column_of[u] - column_of[v]) > 1:
            routed += 1
            inner = [pos[n][1] for n, c in column_of.items() if min(column_of[u], column_of[v]) < c < max(
                column_of[u], column_of[v])]
            level = path[2][1]  # the horizontal run: above (positive) or below (negative) every stack passed
            assert (level > max(inner) + NODE_RADIUS) if sign > 0 else (level < min(inner) - NODE_RADIUS)
        else:
            assert len(path) == 2  # neighbouring columns: straight
    assert routed > 100


def test_the_drawn_figure_has_no_line_through_a_node():
    """The same check on what plotly draws: every line trace, every edge shown (the ranked ones and the rows')."""
    graph, nodes = page_graph()
    fig = figures.circuit_figure(graph, nodes, graph.number_of_edges(), set(), "score")
    pos = figures.circuit_layout(graph)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert lines
    for t in lines:
        points = list(zip(t.x, t.y))
        paths, path = [], []
        for x, y in points:
            if x is None:
                paths.append(path)
                path = []
            else:
                path.append((x, y))
        for path in paths:
            ends = {n for n, p in pos.items() if p in (path[0], path[-1])}
            assert len(ends) == 2
            gap, stranger = closest_stranger(path, pos, ends)
            assert gap > NODE_RADIUS, (ends, stranger, gap)


def test_rows_on_the_input_side_top_k_per_group_the_rest_behind_one_node():
    j = result_json(n_forget_rows=9, n_retain_rows=3)
    graph, nodes = page_graph(j)
    pos, column_of = figures.circuit_layout(graph), figures.column_index(graph)
    rows = [n for n in graph.nodes if n.startswith("row")]
    # forget: the 6 highest estimates (rows 8..3); retain: all 3, lowest first; "+3 more rows" (forget rows 2, 1, 0)
    assert rows == [f"row:{i}" for i in range(8, 2, -1)] + ["row:102", "row:101", "row:100", circuit_view.MORE_ROWS]
    assert nodes[circuit_view.MORE_ROWS]["text"] == "+3 more rows"
    assert {column_of[n] for n in rows} == {0} and column_of["emb:items"] == 1 and column_of["input"] == 2
    assert [pos[n][1] for n in rows] == sorted((pos[n][1] for n in rows), reverse=True)  # top to bottom
    assert nodes["row:8"]["text"].endswith("…") and "A Long Forgotten Movie Title 8 (1995)" in nodes["row:8"]["hover"]
    layer0 = {"a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0"}
    for r in rows[:-1]:
        assert {v for _, v, d in graph.out_edges(r, data=True) if d["kind"] == "row"} == layer0
    assert not list(graph.out_edges(circuit_view.MORE_ROWS))
    # inactive and shared rows are not drawn; no "+N more" when every specific row fits
    assert "row:900" not in graph and "row:901" not in graph
    few, _ = page_graph(result_json(n_forget_rows=2, n_retain_rows=0))
    assert circuit_view.MORE_ROWS not in few and [n for n in few if n.startswith("row")] == ["row:1", "row:0"]


def test_row_edges_are_drawn_apart_from_the_ranked_edges():
    graph, nodes = page_graph()
    fig = figures.circuit_figure(graph, nodes, 0, {"row:8"}, "score")  # no ranked edge at all
    names = [n for t in fig.data if t.customdata is not None for n in t.customdata]
    assert "row:8" in names and circuit_view.MORE_ROWS in names
    hovers = [h for t in fig.data if t.name == "row edges" for h in t.hovertext]
    assert len(hovers) == 9 and all(h.startswith("row ") and "→ layer 0: its whole input contribution" in h
                                    for h in hovers)
    assert not [t for t in fig.data if t.name == "edges"]  # top_n = 0: no ranked edge, rows' edges still drawn
    forget = next(t for t in fig.data if t.name == "forget-specific")
    chosen = list(forget.customdata).index("row:8")
    assert forget.marker.line.width[chosen] == 4  # a selected row is outlined like a selected head


def test_item_row_table_lists_group_members_before_inactive_rows():
    rows = circuit_view.rows_table(CircuitView.from_json(result_json()).of_kind("item-row"))
    assert [r["group"] for r in rows][:12] == ["forget-specific"] * 9 + ["retain-specific"] * 3
    assert rows[-1]["node"] == "row:900"  # estimate 12, the most extreme of all, but inactive: last
    assert rows[0]["specificity"] == 11.0 and rows[9]["specificity"] == -5.0  # most specific first in each group
    assert rows[0]["users (forget/retain)"] == "6/6" and rows[0]["basis"] == "presence" and rows[9]["basis"] == ""


def test_a_graph_selection_adds_rows_to_the_row_picker_and_ignores_the_more_node():
    session = {"row_picker": ["row:5"], "module_picker": ["m1"],
               "chart": {"selection": {"points": [{"customdata": "row:8"}, {"customdata": "rows:more"}]}}}
    assert graph_selection(session, "chart") == {"row:8", "rows:more"}
    assert sync_graph_selection(session, "chart", "module_picker", "row_picker", ignore=("rows:more",)) == ["row:8"]
    assert session["row_picker"] == ["row:5", "row:8"] and session["module_picker"] == ["m1"]  # modules kept
    session["chart"] = {"selection": {"points": [{"customdata": "a0.h1"}, {"customdata": "row:5"}]}}
    assert sync_graph_selection(session, "chart", "module_picker", "row_picker") == ["a0.h1", "row:5"]
    assert session["module_picker"] == ["a0.h1"] and session["row_picker"] == ["row:5", "row:8"]
    session["chart"] = {"selection": {"points": [{"customdata": "rows:more"}]}}
    assert sync_graph_selection(session, "chart", "module_picker", "row_picker", ignore=("rows:more",)) is None
    assert session["module_picker"] == ["a0.h1"]


def test_sentences_and_rule_line_come_from_the_result():
    j = result_json()
    view = CircuitView.from_json(j)
    assert circuit_view.summary_markdown(view).splitlines() == [f"- {g}: a sentence." for g in
                                                             ("forget-specific", "retain-specific", "task-shared")]
    rule = circuit_view.rule_line(view)
    assert "tau = 2" in rule and "false-discovery level 0.05 (Benjamini-Hochberg over 46 tests)" in rule
    assert "at least 5 users" in rule and "95%" in rule and "Target items are not scored" in rule
    scored = circuit_view.rule_line(CircuitView.from_json({**j, "targets_scored": True}))
    assert "Target items are scored" in scored
    threshold = circuit_view.rule_line(CircuitView.from_json({**j, "thresholds": {**j["thresholds"], "rule": "threshold"}}))
    assert "Benjamini-Hochberg" not in threshold and "no test" in threshold


def test_stability_figure_shows_both_kinds_of_draw_and_says_empty():
    by_draw = {"prompt seed": {"jaccard": {"forget-specific": None, "task-shared": 0.68}, "seeds": [0, 1],
                               "sizes": {"forget-specific": [0, 0], "task-shared": [159, 157]}},
               "retain sample": {"jaccard": {"forget-specific": None, "task-shared": 0.7}, "seeds": [0, 101, 102],
                                 "sizes": {"forget-specific": [0, 0, 0], "task-shared": [159, 170, 162]}}}
    fig = figures.stability_figure({kind: DrawStability(**d) for kind, d in by_draw.items()})
    assert [t.name for t in fig.data] == ["prompt seeds [0, 1]", "retain samples [0, 101, 102]"]
    assert list(fig.data[0].text) == ["empty on every draw", "0.68 (sizes 159/157)"]
    assert list(fig.data[1].text) == ["empty on every draw", "0.70 (sizes 159/170/162)"]
