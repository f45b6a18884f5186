"""Plotly figures built from analysis results (drawing only: every number comes from analysis/)."""
from __future__ import annotations

import networkx as nx
import plotly.graph_objects as go

from analysis.circuits.faithfulness import CurvePoint
from analysis.circuits.view import DrawStability, NodeView
from analysis.unlearn.record import UserRecognition

GROUP_COLOURS = {"forget-specific": "#d62728", "retain-specific": "#1f77b4", "task-shared": "#9467bd",
                 "inactive": "#c7c7c7", None: "#2ca02c"}  # None: input and logits


ROUTE_MARGIN = 0.5  # how far (in column gaps) a routed edge passes above or below a column's extreme node
ROUTE_LANE = 0.06  # extra height per column spanned: a longer edge runs above a shorter one instead of on it


def circuit_layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Layers left to right, one column per `layer` value (heads of a layer stacked, its MLP just after them),
    each column's nodes top to bottom in insertion order, centred on y = 0. x and y share one unit (a column
    gap equals a node spacing), scaled into [-1, 1], so distances mean the same along both axes."""
    columns = column_index(graph)
    stacks: dict[int, list[str]] = {}
    for n in graph.nodes:
        stacks.setdefault(columns[n], []).append(n)
    mid = (len(stacks) - 1) / 2
    raw = {n: (c - mid, (len(names) - 1) / 2 - i) for c, names in stacks.items() for i, n in enumerate(names)}
    scale = max((max(abs(x), abs(y)) for x, y in raw.values()), default=1.0) or 1.0
    return {n: (x / scale, y / scale) for n, (x, y) in raw.items()}


def column_index(graph: nx.DiGraph) -> dict[str, int]:
    """Each node's column: the rank of its `layer` among the graph's layers."""
    ordered = sorted({d["layer"] for _, d in graph.nodes(data=True)})
    rank = {layer: i for i, layer in enumerate(ordered)}
    return {n: rank[d["layer"]] for n, d in graph.nodes(data=True)}


def column_extents(pos: dict, column_of: dict[str, int]) -> dict[int, tuple[float, float, float]]:
    """Per column: its x, and the y of its lowest and of its highest node."""
    out: dict[int, tuple[float, float, float]] = {}
    for n, c in column_of.items():
        x, y = pos[n]
        _, lo, hi = out.get(c, (x, y, y))
        out[c] = (x, min(lo, y), max(hi, y))
    return out


def route_edge(pos: dict, column_of: dict[str, int], u: str, v: str, sign: float,
               extents: dict | None = None) -> list[tuple[float, float]]:
    """The polyline an edge u -> v is drawn along.

    Adjacent columns: a straight line (no node lies between them). Further apart: a straight line would cross
    the stacks in between (m0 -> logits runs through every later MLP), so the edge leaves u horizontally, climbs
    within the gap after u's column to a level above (sign >= 0) or below (sign < 0) the extreme node of every
    column it passes, runs there, and comes down within the gap before v's column. Every bend sits in a gap,
    a quarter gap or more from any column, so the line passes no node it does not end at.
    """
    (x0, y0), (x1, y1) = pos[u], pos[v]
    cu, cv = column_of[u], column_of[v]
    if abs(cv - cu) <= 1:
        return [(x0, y0), (x1, y1)]
    ext = extents if extents is not None else column_extents(pos, column_of)
    step = 1 if cv > cu else -1
    between = [ext[c] for c in range(cu + step, cv, step)]
    gap_u, gap_v = abs(ext[cu + step][0] - x0), abs(x1 - ext[cv - step][0])
    rise = min(gap_u, gap_v) * (ROUTE_MARGIN + ROUTE_LANE * (len(between) - 1))
    level = (max(hi for _, _, hi in between) + rise) if sign >= 0 else (min(lo for _, lo, _ in between) - rise)
    return [(x0, y0), (x0 + step * gap_u / 4, y0), (x0 + step * 3 * gap_u / 4, level),
            (x1 - step * 3 * gap_v / 4, level), (x1 - step * gap_v / 4, y1), (x1, y1)]


def _polyline_xy(paths: list[list[tuple[float, float]]]) -> tuple[list, list]:
    xs: list = []
    ys: list = []
    for path in paths:
        xs += [p[0] for p in path] + [None]
        ys += [p[1] for p in path] + [None]
    return xs, ys


def _hover_point(path: list[tuple[float, float]], k: int, n: int) -> tuple[float, float]:
    """Where an edge's hover marker sits: the middle of a straight edge; on a routed edge, a point of its
    horizontal run, spread (k of n) so edges sharing the run keep separate markers."""
    if len(path) == 2:
        return (path[0][0] + path[1][0]) / 2, (path[0][1] + path[1][1]) / 2
    (a, y), (b, _) = path[2], path[3]
    t = (k + 1) / (n + 1)
    return a + t * (b - a), y


def circuit_figure(graph: nx.DiGraph, nodes: dict[str, dict], top_n: int, selected: set[str],
                   score_key: str = "score") -> go.Figure:
    """Nodes coloured by group, sized by importance; the top_n edges by |score|, width by |score|, routed
    around the columns they pass. Edges marked kind="row" (item rows into layer 0) are drawn apart: thin, in
    their row's group colour, never counted in top_n. A node's `nodes` entry may set text, size and symbol."""
    pos = circuit_layout(graph)
    column_of = column_index(graph)
    ext = column_extents(pos, column_of)
    ranked = [e for e in graph.edges(data=True) if e[2].get("kind") != "row"]
    edges = sorted(ranked, key=lambda e: -abs(e[2][score_key]))[:top_n]
    paths = {(u, v): route_edge(pos, column_of, u, v, d[score_key], ext) for u, v, d in edges}
    top = max((abs(e[2][score_key]) for e in edges), default=1.0) or 1.0
    fig = go.Figure()
    for sign, colour in ((1, "rgba(31,119,180,{a})"), (-1, "rgba(214,39,40,{a})")):
        for lo, hi in ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01)):  # width bins keep traces few
            chosen = [paths[u, v] for u, v, d in edges
                      if (d[score_key] >= 0) == (sign > 0) and lo <= abs(d[score_key]) / top < hi]
            if chosen:
                xs, ys = _polyline_xy(chosen)
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                         line={"width": 1 + 7 * hi, "color": colour.format(a=0.25 + 0.6 * hi)}))
    bundles: dict[tuple, list] = {}  # edges sharing a horizontal run: same columns, same side
    for u, v, d in edges:
        bundles.setdefault((column_of[u], column_of[v], d[score_key] >= 0), []).append((u, v, d))
    mids = [(*_hover_point(paths[u, v], k, len(b)), f"{u} → {v}: {d[score_key]:+.4f}")
            for b in bundles.values() for k, (u, v, d) in enumerate(b)]
    if mids:
        fig.add_trace(go.Scatter(x=[m[0] for m in mids], y=[m[1] for m in mids], mode="markers", showlegend=False,
                                 marker={"size": 6, "opacity": 0.15, "color": "#555"},
                                 hovertext=[m[2] for m in mids], hoverinfo="text", name="edges"))
    _row_edges(fig, graph, nodes, pos, column_of, ext, score_key)
    peak = max((abs(n.get("importance", 0.0)) for n in nodes.values() if "size" not in n), default=1.0) or 1.0
    for group in ("forget-specific", "retain-specific", "task-shared", "inactive", None, "more"):
        names = [n for n in graph.nodes if nodes.get(n, {}).get("group") == group]
        if not names:
            continue
        info = [nodes[n] for n in names]
        left = [i.get("symbol") == "diamond" or group == "more" for i in info]  # the row column: titles to its left
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in names], y=[pos[n][1] for n in names], mode="markers+text",
            name={None: "input / logits", "more": "more item rows (table below)"}.get(group, group),
            text=[i.get("text", n) for n, i in zip(names, info)], customdata=names,
            textposition=["middle left" if lft else "top center" for lft in left],
            marker={"size": [i.get("size", 12 + 28 * abs(i.get("importance", 0.0)) / peak) for i in info],
                    "symbol": [i.get("symbol", "circle") for i in info],
                    "color": GROUP_COLOURS.get(group, "#f2f2f2"),
                    "line": {"width": [4 if n in selected else 1 for n in names],
                             "color": ["black" if n in selected else ("#777" if group == "more" else "white")
                                       for n in names]}},
            hovertext=[i.get("hover", n) for n, i in zip(names, info)], hoverinfo="text"))
    xs = [x for x, _ in pos.values()]
    tallest = max(sum(1 for c in column_of.values() if c == k) for k in set(column_of.values()))
    # Drag pans by default: in lasso or box mode plotly.js drops a single click on a point (checked in
    # Chromium: the selection stays empty), while in pan mode a click selects; lasso is one modebar click away.
    fig.update_layout(height=max(520, 38 * tallest + 160), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      dragmode="pan", yaxis={"visible": False}, legend={"title": "module group"},
                      # room on the left for the row titles, which sit left of their column
                      xaxis={"visible": False, "range": [min(xs) - (0.45 if any(
                          nodes.get(n, {}).get("symbol") == "diamond" for n in graph) else 0.08), max(xs) + 0.08]},
                      clickmode="event+select")
    return fig


def _row_edges(fig: go.Figure, graph: nx.DiGraph, nodes: dict[str, dict], pos: dict, column_of: dict, ext: dict,
               score_key: str) -> None:
    """Item rows into layer 0: one thin trace per group, one hover marker per row where its edges leave it."""
    rows: dict[str, list] = {}
    for u, v, d in graph.edges(data=True):
        if d.get("kind") == "row":
            rows.setdefault(u, []).append(route_edge(pos, column_of, u, v, d[score_key], ext))
    for group in ("forget-specific", "retain-specific", "task-shared", "inactive"):
        names = [n for n in rows if nodes.get(n, {}).get("group") == group]
        if not names:
            continue
        xs, ys = _polyline_xy([p for n in names for p in rows[n]])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False, opacity=0.35,
                                 line={"width": 1, "color": GROUP_COLOURS[group]}))
        fig.add_trace(go.Scatter(
            x=[rows[n][0][1][0] for n in names], y=[rows[n][0][1][1] for n in names], mode="markers",
            showlegend=False, marker={"size": 6, "opacity": 0.15, "color": GROUP_COLOURS[group]}, name="row edges",
            hovertext=[nodes[n].get("edge_hover", n) for n in names], hoverinfo="text"))


def stability_figure(by_draw: dict[str, DrawStability]) -> go.Figure:
    """Jaccard per group, one bar group per kind of draw (prompt seeds, retain samples); the bar text gives
    the group's size on each draw, and a group empty on every draw says so instead of showing a 0."""
    fig = go.Figure()
    for kind, s in by_draw.items():
        groups = list(s.jaccard)
        values = [s.jaccard[g] for g in groups]
        fig.add_trace(go.Bar(
            x=groups, y=[v if v is not None else 0.0 for v in values], name=f"{kind}s {s.seeds}",
            text=["empty on every draw" if v is None else f"{v:.2f} (sizes {'/'.join(map(str, s.sizes[g]))})"
                  for g, v in zip(groups, values)], textposition="outside", cliponaxis=False))
    fig.update_layout(height=320, barmode="group", title="Group stability: Jaccard over draws",
                      yaxis={"range": [0, 1.15], "title": "mean pairwise Jaccard"}, margin={"t": 40},
                      legend={"orientation": "h", "y": -0.15})
    return fig


def faithfulness_figure(curve: tuple[CurvePoint, ...], at: CurvePoint) -> go.Figure:
    share = [p.share for p in curve]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=share, y=[p.recovery for p in curve], mode="lines+markers", name="recovery"))
    fig.add_trace(go.Scatter(x=share, y=[p.faithfulness for p in curve], mode="lines+markers",
                             name="faithfulness", line={"dash": "dot"}))
    fig.add_trace(go.Scatter(x=[at.share], y=[at.recovery], mode="markers", name="returned circuit",
                             marker={"size": 14, "symbol": "star", "color": "black"}))
    fig.update_layout(height=320, xaxis={"title": "share of edges kept", "tickformat": ".0%"},
                      yaxis={"title": "of the full model's metric"}, margin={"t": 30})
    return fig


def bars(values: dict[str, float], title: str, y_range: tuple[float, float] | None = None) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(values), y=list(values.values())))
    fig.update_layout(height=280, title=title, yaxis={"range": list(y_range) if y_range else None},
                      margin={"t": 40})
    return fig


def counts(values: dict[str, int], title: str, x_title: str, y_title: str) -> go.Figure:
    """Horizontal bars, largest on top, both axes named."""
    ordered = sorted(values.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in ordered], y=[k for k, _ in ordered], orientation="h"))
    fig.update_layout(height=max(280, 18 * len(ordered)), title=title, margin={"t": 40},
                      xaxis={"title": x_title}, yaxis={"title": y_title})
    return fig


def heatmap(grid: list[list[float | None]], columns: list[str], rows: list[str], title: str,
            zmin: float = -1.0, zmax: float = 1.0, colorscale: str = "RdBu") -> go.Figure:
    fig = go.Figure(go.Heatmap(z=grid, x=columns, y=rows, zmin=zmin, zmax=zmax, colorscale=colorscale,
                               colorbar={"title": "cos"}, hovertemplate="%{y} %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(height=300, title=title, yaxis={"autorange": "reversed"}, margin={"t": 40})
    return fig


def attention_figure(pattern, labels: list[str], title: str, width: int = 28) -> go.Figure:
    """Every token labelled on both axes (titles shortened to `width` characters; hover shows them whole)."""
    short = [label if len(label) <= width else label[: width - 1] + "…" for label in labels]
    positions = list(range(len(labels)))
    fig = go.Figure(go.Heatmap(z=pattern, x=positions, y=positions, colorscale="Viridis", zmin=0,
                               customdata=[[[labels[q], labels[k]] for k in positions] for q in positions],
                               hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>%{z:.3f}"
                                             "<extra></extra>"))
    axis = {"tickmode": "array", "tickvals": positions, "ticktext": short, "tickfont": {"size": 10}}
    fig.update_layout(height=max(560, 16 * len(labels) + 200), title=title, margin={"t": 40},
                      yaxis={**axis, "autorange": "reversed"}, xaxis={**axis, "tickangle": -60})
    return fig


def specificity_figure(nodes: list[NodeView], tau: float, floor_of: dict[str, float], title: str) -> go.Figure:
    """Forget importance vs retain importance per node (log axes), coloured by group; hover shows
    the specificity interval. Dotted lines: the tau band around the diagonal."""
    import math

    fig = go.Figure()
    lo = min([min(n.forget_importance, n.retain_importance) for n in nodes
              if min(n.forget_importance, n.retain_importance) > 0] or [1e-4])
    hi = max([max(n.forget_importance, n.retain_importance) for n in nodes] or [1.0])
    tiny = lo / 3  # nodes with 0 on a side sit on the axis edge instead of vanishing off a log axis
    for group in ("forget-specific", "retain-specific", "task-shared", "inactive"):
        members = [n for n in nodes if n.group == group]
        if not members:
            continue
        fig.add_trace(go.Scatter(
            x=[max(n.retain_importance, tiny) for n in members], y=[max(n.forget_importance, tiny) for n in members],
            mode="markers", name=f"{group} ({len(members)})", customdata=[n.name for n in members],
            marker={"color": GROUP_COLOURS[group], "size": [11 if n.kind != "item-row" else 6 for n in members],
                    "symbol": ["circle" if n.kind != "item-row" else "diamond" for n in members]},
            hovertext=[f"<b>{n.label}</b> ({n.kind})<br>specificity log(I_f/I_r) "
                       f"{n.specificity.estimate:+.2f} [{n.specificity.low:+.2f}, "
                       f"{n.specificity.high:+.2f}]<br>floor {floor_of.get(n.kind, 0):.2g}"
                       for n in members], hoverinfo="text"))
    for ratio, dash in ((1.0, "solid"), (tau, "dot"), (1 / tau, "dot")):
        fig.add_trace(go.Scatter(x=[tiny, hi * 2], y=[tiny * ratio, hi * 2 * ratio], mode="lines", showlegend=False,
                                 hoverinfo="skip", line={"color": "#999", "dash": dash, "width": 1}))
    fig.update_layout(height=460, title=title, legend={"title": "group"}, margin={"t": 40},
                      # decades only, written as powers of ten (minor ticks read "5 2 5 2" and SI read "1u")
                      xaxis={"type": "log", "title": "importance on retain prompts (share of family)",
                             "range": [math.log10(tiny) - 0.1, math.log10(hi * 2)], "dtick": 1,
                             "exponentformat": "power"},
                      yaxis={"type": "log", "title": "importance on forget prompts (share of family)",
                             "range": [math.log10(tiny) - 0.1, math.log10(hi * 2)], "dtick": 1,
                             "exponentformat": "power"})
    return fig


def interval_figure(nodes: list[NodeView], tau: float, title: str) -> go.Figure:
    """Specificity estimates with their bootstrap intervals, one trace per group (a scalar colour: error bars in
    the group's colour, where an array colour drew them black and logged 'Invalid color specifier'); every node
    labelled on the x axis, in the given order. Dotted: ±log(tau)."""
    import math

    labels = [n.label for n in nodes]
    fig = go.Figure()
    for group in dict.fromkeys(n.group for n in nodes):
        members = [n for n in nodes if n.group == group]
        fig.add_trace(go.Scatter(
            x=[n.label for n in members], y=[n.specificity.estimate for n in members], mode="markers",
            name=group, marker={"color": GROUP_COLOURS[group], "size": 9},
            error_y={"type": "data", "symmetric": False, "color": GROUP_COLOURS[group],
                     "array": [n.specificity.high - n.specificity.estimate for n in members],
                     "arrayminus": [n.specificity.estimate - n.specificity.low for n in members]},
            hovertext=[f"{n.name}: {n.group}" for n in members], hoverinfo="text+y"))
    for y in (math.log(tau), -math.log(tau)):
        fig.add_hline(y=y, line_dash="dot", line_color="#999")
    fig.update_layout(height=420, title=title, yaxis={"title": "log(I_forget / I_retain)"}, margin={"t": 40},
                      legend={"title": "group"},
                      xaxis={"tickangle": -45, "tickmode": "array", "tickvals": labels, "tickfont": {"size": 9},
                             "categoryorder": "array", "categoryarray": labels, "automargin": True})
    return fig


def loss_curves(rows: list[dict]) -> go.Figure:
    """The lab's live chart: forget and retain binary cross-entropy per step, with axis titles (plotly: Vega's
    line chart logged 'Infinite extent' warnings on its first, one-point draw and printed its first tick as
    1.000000)."""
    steps = [r["step"] for r in rows]
    fig = go.Figure([go.Scatter(x=steps, y=[r[key] for r in rows], mode="lines+markers" if len(rows) < 3 else "lines",
                                name=name) for key, name in (("forget_bce", "forget samples"),
                                                             ("retain_bce", "retained samples"))])
    fig.update_layout(height=300, margin={"t": 30}, title="Loss per step (one batch each)",
                      # whole steps only (tickformat "d" alone printed 0 1 1 2 2 on a two-step run)
                      xaxis={"title": "step", "tick0": 1, "dtick": max(1, -(-max(steps, default=1) // 10)),
                             "range": [0.5, max(steps, default=1) + 0.5]},
                      yaxis={"title": "binary cross-entropy"}, legend={"title": ""})
    return fig


def recognisability(per_user: tuple[UserRecognition, ...]) -> go.Figure:
    """Per forgotten user, the share of never-seen users they out-score on the matched attack: before (do
    nothing), after (this run) and under the retrain; 0.5 = a typical never-seen user."""
    fig = go.Figure()
    for key, name in (("before", "do nothing"), ("after", "this run"), ("retrain", "retrain (gold)")):
        fig.add_trace(go.Histogram(x=[getattr(r, key) for r in per_user], name=name, opacity=0.6,
                                   xbins={"start": 0, "end": 1.0001, "size": 0.1}))
    fig.add_vline(x=0.5, line_dash="dash", annotation_text="typical never-seen user")
    fig.update_layout(barmode="overlay", height=320, margin={"t": 30},
                      xaxis={"title": "share of never-seen users out-scored", "range": [0, 1], "tickformat": ".0%"},
                      yaxis={"title": "forgotten users"})
    return fig
