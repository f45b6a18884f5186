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
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10}, dragmode="lasso",
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


def attention_figure(pattern, labels: list[str], title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=pattern, x=labels, y=labels, colorscale="Viridis", zmin=0,
                               hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_layout(height=560, title=title, yaxis={"autorange": "reversed"}, margin={"t": 40},
                      xaxis={"tickangle": -60})
    return fig
