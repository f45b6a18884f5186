"""Plotly figures built from analysis results (drawing only: every number comes from analysis/)."""
from __future__ import annotations

import networkx as nx
import plotly.graph_objects as go

GROUP_COLOURS = {"forget-specific": "#d62728", "retain-specific": "#1f77b4", "task-shared": "#9467bd",
                 "inactive": "#c7c7c7", None: "#2ca02c"}  # None: input and logits


def circuit_layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Layers left to right (heads of a layer stacked, its MLP just after them); input and logits centred."""
    ordered = sorted({d["layer"] for _, d in graph.nodes(data=True)})
    column = {layer: i for i, layer in enumerate(ordered)}
    for n, d in graph.nodes(data=True):
        d["column"] = column[d["layer"]]
    pos = nx.multipartite_layout(graph, subset_key="column", align="vertical", scale=1.0)
    return {n: (float(x), float(y)) for n, (x, y) in pos.items()}


def circuit_figure(graph: nx.DiGraph, nodes: dict[str, dict], top_n: int, selected: set[str],
                   score_key: str = "score") -> go.Figure:
    """Nodes coloured by group, sized by importance; the top_n edges by |score|, width by |score|."""
    pos = circuit_layout(graph)
    edges = sorted(graph.edges(data=True), key=lambda e: -abs(e[2][score_key]))[:top_n]
    top = max((abs(e[2][score_key]) for e in edges), default=1.0) or 1.0
    fig = go.Figure()
    for sign, colour in ((1, "rgba(31,119,180,{a})"), (-1, "rgba(214,39,40,{a})")):
        for lo, hi in ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01)):  # width bins keep traces few
            xs, ys = [], []
            for u, v, d in edges:
                s = d[score_key]
                if (s >= 0) == (sign > 0) and lo <= abs(s) / top < hi:
                    xs += [pos[u][0], pos[v][0], None]
                    ys += [pos[u][1], pos[v][1], None]
            if xs:
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                         line={"width": 1 + 7 * hi, "color": colour.format(a=0.25 + 0.6 * hi)}))
    mids = [((pos[u][0] + pos[v][0]) / 2, (pos[u][1] + pos[v][1]) / 2, f"{u} → {v}: {d[score_key]:+.4f}")
            for u, v, d in edges]
    if mids:
        fig.add_trace(go.Scatter(x=[m[0] for m in mids], y=[m[1] for m in mids], mode="markers", showlegend=False,
                                 marker={"size": 6, "opacity": 0.15, "color": "#555"},
                                 hovertext=[m[2] for m in mids], hoverinfo="text", name="edges"))
    peak = max((abs(n.get("importance", 0.0)) for n in nodes.values()), default=1.0) or 1.0
    for group in ("forget-specific", "retain-specific", "task-shared", "inactive", None):
        names = [n for n in graph.nodes if nodes.get(n, {}).get("group") == group]
        if not names:
            continue
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in names], y=[pos[n][1] for n in names], mode="markers+text",
            name=group or "input / logits", text=names, textposition="top center", customdata=names,
            marker={"size": [12 + 28 * abs(nodes[n].get("importance", 0.0)) / peak for n in names],
                    "color": GROUP_COLOURS[group],
                    "line": {"width": [4 if n in selected else 1 for n in names],
                             "color": ["black" if n in selected else "white" for n in names]}},
            hovertext=[nodes[n].get("hover", n) for n in names], hoverinfo="text"))
    # Drag pans by default: in lasso or box mode plotly.js drops a single click on a point (checked in
    # Chromium: the selection stays empty), while in pan mode a click selects; lasso is one modebar click away.
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10}, dragmode="pan",
                      xaxis={"visible": False}, yaxis={"visible": False}, legend={"title": "module group"},
                      clickmode="event+select")
    return fig


def faithfulness_figure(curve: list[dict], at: dict) -> go.Figure:
    share = [p["share"] for p in curve]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=share, y=[p["recovery"] for p in curve], mode="lines+markers", name="recovery"))
    fig.add_trace(go.Scatter(x=share, y=[p["faithfulness"] for p in curve], mode="lines+markers",
                             name="faithfulness", line={"dash": "dot"}))
    fig.add_trace(go.Scatter(x=[at["share"]], y=[at["recovery"]], mode="markers", name="returned circuit",
                             marker={"size": 14, "symbol": "star", "color": "black"}))
    fig.update_layout(height=320, xaxis={"title": "share of edges kept", "tickformat": ".0%"},
                      yaxis={"title": "of the full model's metric"}, margin={"t": 30})
    return fig


def bars(values: dict[str, float], title: str, y_range: tuple[float, float] | None = None) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(values), y=list(values.values())))
    fig.update_layout(height=280, title=title, yaxis={"range": list(y_range) if y_range else None},
                      margin={"t": 40})
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


def specificity_figure(nodes: list[dict], tau: float, floor_of: dict[str, float], title: str) -> go.Figure:
    """Forget importance vs retain importance per node (log axes), coloured by group; hover shows
    the specificity interval. Dotted lines: the tau band around the diagonal."""
    import math

    fig = go.Figure()
    lo = min([min(n["forget_importance"], n["retain_importance"]) for n in nodes
              if min(n["forget_importance"], n["retain_importance"]) > 0] or [1e-4])
    hi = max([max(n["forget_importance"], n["retain_importance"]) for n in nodes] or [1.0])
    tiny = lo / 3  # nodes with 0 on a side sit on the axis edge instead of vanishing off a log axis
    for group in ("forget-specific", "retain-specific", "task-shared", "inactive"):
        members = [n for n in nodes if n["group"] == group]
        if not members:
            continue
        fig.add_trace(go.Scatter(
            x=[max(n["retain_importance"], tiny) for n in members], y=[max(n["forget_importance"], tiny) for n in members],
            mode="markers", name=f"{group} ({len(members)})", customdata=[n["name"] for n in members],
            marker={"color": GROUP_COLOURS[group], "size": [11 if n["kind"] != "item-row" else 6 for n in members],
                    "symbol": ["circle" if n["kind"] != "item-row" else "diamond" for n in members]},
            hovertext=[f"<b>{n['label']}</b> ({n['kind']})<br>specificity log(I_f/I_r) "
                       f"{n['specificity']['estimate']:+.2f} [{n['specificity']['low']:+.2f}, "
                       f"{n['specificity']['high']:+.2f}]<br>floor {floor_of.get(n['kind'], 0):.2g}"
                       for n in members], hoverinfo="text"))
    for ratio, dash in ((1.0, "solid"), (tau, "dot"), (1 / tau, "dot")):
        fig.add_trace(go.Scatter(x=[tiny, hi * 2], y=[tiny * ratio, hi * 2 * ratio], mode="lines", showlegend=False,
                                 hoverinfo="skip", line={"color": "#999", "dash": dash, "width": 1}))
    fig.update_layout(height=460, title=title, legend={"title": "group"}, margin={"t": 40},
                      xaxis={"type": "log", "title": "importance on retain prompts (share of family)",
                             "range": [math.log10(tiny) - 0.1, math.log10(hi * 2)]},
                      yaxis={"type": "log", "title": "importance on forget prompts (share of family)",
                             "range": [math.log10(tiny) - 0.1, math.log10(hi * 2)]})
    return fig


def interval_figure(nodes: list[dict], tau: float, title: str) -> go.Figure:
    """Specificity estimates with their bootstrap intervals; dotted: ±log(tau)."""
    import math

    colours = [GROUP_COLOURS[n["group"]] for n in nodes]
    fig = go.Figure(go.Scatter(
        x=[n["label"] for n in nodes], y=[n["specificity"]["estimate"] for n in nodes], mode="markers",
        marker={"color": colours, "size": 9},
        error_y={"type": "data", "symmetric": False,
                 "array": [n["specificity"]["high"] - n["specificity"]["estimate"] for n in nodes],
                 "arrayminus": [n["specificity"]["estimate"] - n["specificity"]["low"] for n in nodes]},
        hovertext=[f"{n['name']}: {n['group']}" for n in nodes], hoverinfo="text+y"))
    for y in (math.log(tau), -math.log(tau)):
        fig.add_hline(y=y, line_dash="dot", line_color="#999")
    fig.update_layout(height=380, title=title, yaxis={"title": "log(I_forget / I_retain)"}, margin={"t": 40},
                      xaxis={"tickangle": -45})
    return fig
