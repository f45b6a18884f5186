"""What the Circuits page draws, assembled from a CircuitResult's typed view (analysis.circuits.view): which item rows get a node, the
labels, hover texts and the lines of text above the graph. Display choices only: every number is read
from the result (no model math here), and nothing here touches Streamlit, so it is tested directly."""
from __future__ import annotations

import networkx as nx

from analysis.circuits.view import CircuitView, NodeView

MORE_ROWS = "rows:more"  # the one node standing for the specific rows not drawn
ROW_LAYER, ROLE_LAYER = -3.0, -2.0  # left of the input node (layer -1): rows feed the roles, roles the input
TOP_ROWS = 6  # rows drawn per specific group: more would crowd the column and its titles
GROUP_ORDER = ("forget-specific", "retain-specific", "task-shared", "inactive")
SCORE_KEYS = ("score", "forget_score", "retain_score")


def short(title: str, width: int = 22) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def sort_rows(rows: list[NodeView]) -> list[NodeView]:
    """Group members first (forget-specific, retain-specific, task-shared, inactive), each group most
    specific first: an inactive row with an extreme estimate (few users, never tested) never heads the list."""
    def key(n: NodeView) -> tuple[int, float]:
        estimate = n.specificity.estimate
        return GROUP_ORDER.index(n.group), (estimate if n.group == "retain-specific" else -estimate)

    return sorted(rows, key=key)


def top_rows(nodes: tuple[NodeView, ...] | list[NodeView], k: int = TOP_ROWS) -> tuple[list[NodeView], int]:
    """The k most specific rows of each specific group (forget: highest estimate, retain: lowest), and how
    many rows of those groups are left out."""
    shown, rest = [], 0
    for group in ("forget-specific", "retain-specific"):
        members = sort_rows([n for n in nodes if n.kind == "item-row" and n.group == group])
        shown += members[:k]
        rest += len(members[k:])
    return shown, rest


def hover(n: NodeView) -> str:
    spec = n.specificity
    title = f"<b>{n.label}</b> ({n.name})" if n.kind == "item-row" else f"<b>{n.name}</b>"
    text = f"{title} ({n.group or 'endpoint'})<br>forget {n.forget_score:+.4f} · retain {n.retain_score:+.4f}"
    if spec:
        text += f"<br>specificity {spec.estimate:+.2f} [{spec.low:+.2f}, {spec.high:+.2f}]"
        if spec.basis:
            text += f" (basis: {spec.basis})"
    if n.presence and n.kind == "item-row":
        text += f"<br>in the prompts of {n.presence.forget} forget / {n.presence.retain} retain users"
    if n.forget_patching is not None:
        text += f"<br>exact patching: forget {n.forget_patching:+.4f} · retain {n.retain_patching:+.4f}"
    return text


def _scores(n: NodeView) -> dict[str, float]:
    """The edge attributes the figure ranks by (SCORE_KEYS)."""
    return {"score": n.mean_score, "forget_score": n.forget_score, "retain_score": n.retain_score}


def build_graph(graph: nx.DiGraph, view: CircuitView, k: int = TOP_ROWS) -> tuple[nx.DiGraph, dict[str, dict]]:
    """The task graph (from `result.graph.to_networkx()`) with the page's additions, and each node's display
    entry for `figures.circuit_figure`.

    Added: the input node split by token role (layer -2, an edge into `input` each), and on the far left the
    k most specific rows of each specific group plus one "+N more rows" node; each drawn row gets an edge into
    every layer-0 node (its whole input contribution reaches all of them), marked kind="row" so the figure
    draws them apart from the ranked edges.
    """
    by_name = view.by_name
    for e in view.edges:
        graph.edges[e.source, e.target].update(forget_score=e.forget_score, retain_score=e.retain_score)
    shown, rest = top_rows(view.nodes, k)
    # rows inserted first so their column is laid out top to bottom: forget rows, retain rows, then "+N more"
    for n in shown:
        graph.add_node(n.name, layer=ROW_LAYER)
    if rest:
        graph.add_node(MORE_ROWS, layer=ROW_LAYER)
    layer0 = [n for n in graph.nodes if n == "m0" or n.startswith("a0.h")]
    for n in shown:
        for target in layer0:
            graph.add_edge(n.name, target, kind="row", in_circuit=False, **_scores(n))
    for n in view.of_kind("embedding"):
        graph.add_node(n.name, layer=ROLE_LAYER)
        graph.add_edge(n.name, "input", in_circuit=False, **_scores(n))
    nodes = {name: {"group": by_name[name].group, "importance": by_name[name].importance,
                    "hover": hover(by_name[name])} for name in graph.nodes if name in by_name}
    nodes["logits"] = {"group": None, "importance": 0.0, "hover": "logits"}
    for n in shown:
        nodes[n.name].update(
            text=short(n.label), symbol="diamond", size=13,
            edge_hover=f"row {n.label} → layer 0: its whole input contribution {n.mean_score:+.4f} "
                       f"(forget {n.forget_score:+.4f} · retain {n.retain_score:+.4f})")
    if rest:
        nodes[MORE_ROWS] = {"group": "more", "text": f"+{rest} more rows", "symbol": "square", "size": 13,
                            "hover": f"{rest} more forget- or retain-specific item rows: select to open the "
                                     f"item-row table"}
    return graph, nodes


def summary_markdown(view: CircuitView) -> str:
    """One line per group, read off the data (analysis.circuits.describe)."""
    return "\n".join(f"- {s}" for s in view.sentences)


def rule_line(view: CircuitView) -> str:
    """The rule that made the groups, with this result's numbers."""
    t = view.thresholds
    if t.rule == "specificity":
        text = (f"Rule: forget- (retain-) specific when log(importance on forget / on retain) is significantly above "
                f"log(tau) (below -log(tau)), tau = {t.tau:g}, at false-discovery level {t.fdr:g} "
                f"(Benjamini-Hochberg over {view.tested} tests); tested only "
                f"with importance at least {t.floor:g} x a uniform share of the node's family, and, for an item "
                f"row, in the prompts of at least {t.min_users} users of that side; intervals at "
                f"{t.level:.0%}.")
    else:
        text = (f"Rule: threshold, importance at least {t.forget:g} x the mean node on forget prompts and "
                f"{t.retain:g} x on retain prompts; no interval, no test.")
    if view.targets_scored:
        return text + " Target items are scored: the counterfactual replaces them too."
    return text + " Target items are not scored: the counterfactual keeps them, so their rows score 0 as targets."


def rows_table(rows: list[NodeView]) -> list[dict]:
    return [{"item": n.label, "node": n.name, "group": n.group,
             "specificity": round(n.specificity.estimate, 3), "low": round(n.specificity.low, 3),
             "high": round(n.specificity.high, 3),
             "users (forget/retain)": f"{n.presence.forget}/{n.presence.retain}",
             "basis": n.specificity.basis or "",
             "forget importance": round(n.forget_importance, 5),
             "retain importance": round(n.retain_importance, 5)} for n in sort_rows(rows)]
