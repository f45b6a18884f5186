"""Circuits: the graph for a deletion request, coloured by module group; select modules for the lab."""
import json

import streamlit as st

from analysis.circuits.discover import CircuitSettings, discover_circuits
from analysis.circuits.groups import GroupThresholds
from app import figures, state

st.title("Circuits of a deletion request")
st.write("Each head and MLP is scored on forget prompts and on retain prompts (attribution against counterfactual "
         "histories). Important for forget only: forget-specific; for retain only: retain-specific; for both: "
         "task-shared. Select modules on the graph (click, box or lasso) or in the list; the Unlearning lab can "
         "update only those.")


def circuit_settings() -> tuple[CircuitSettings, GroupThresholds]:
    """Sidebar controls, starting from (and saved back to) the session's settings, shared with the lab."""
    settings, thresholds = state.circuit_settings()
    methods = ["eap-ig", "eap", "patching"]
    with st.sidebar.expander("Circuit settings", expanded=False):
        method = st.selectbox("Attribution", methods, index=methods.index(settings.method.value), key="circ_method")
        n_prompts = st.number_input("Prompts per side", 4, 2048, settings.n_prompts, key="circ_prompts")
        seeds = st.number_input("Stability seeds", 1, 5, settings.stability_seeds, key="circ_seeds")
        f = st.slider("Forget threshold (x mean module)", 0.0, 3.0, float(thresholds.forget), 0.1, key="circ_ft")
        r = st.slider("Retain threshold (x mean module)", 0.0, 3.0, float(thresholds.retain), 0.1, key="circ_rt")
    st.session_state["circuit_settings"] = (CircuitSettings(method=method, n_prompts=int(n_prompts),
                                                            stability_seeds=int(seeds)), GroupThresholds(f, r))
    return st.session_state["circuit_settings"]


with state.readable_errors():
    ws = state.workspace()
    rec = state.original()
    request = st.text_input("Deletion request", state.request(), key="circ_request",
                            help="users:0.1 · users:12,40 · interactions:0.05 · genre:Horror · genre:Horror@users:1,2")
    st.session_state["request"] = request
    settings, thresholds = circuit_settings()
    forget = ws.forget_set(request)
    bar, progress = state.progress_bar("Finding circuits (cached after the first time)")
    result = discover_circuits(ws, rec, forget, settings, thresholds, progress)
    bar.empty()
    j = result.to_json()
    graph = result.graph.to_networkx()
    for e in j["edges"]:
        graph.edges[e["from"], e["to"]].update(forget_score=e["forget_score"], retain_score=e["retain_score"])
    nodes = {n["name"]: {"group": n["group"], "importance": (abs(n["forget_score"]) + abs(n["retain_score"])) / 2,
                         "hover": f"<b>{n['name']}</b> ({n['group'] or 'endpoint'})<br>forget {n['forget_score']:+.4f}"
                                  f" · retain {n['retain_score']:+.4f}<br>exact patching: forget "
                                  f"{n['forget_patching']:+.4f} · retain {n['retain_patching']:+.4f}"}
             for n in j["nodes"]}
    nodes["logits"] = {"group": None, "importance": 0.0, "hover": "logits"}

    state.sync_graph_selection(st.session_state, "circuit_graph", "module_picker")
    modules = [n for n in result.modules]
    st.session_state.setdefault("module_picker", [m for m in state.selected_modules() if m in modules])
    picked = st.multiselect("Selected modules (for selective unlearning)", modules, key="module_picker")
    st.session_state["selected_modules"] = list(picked)

    c1, c2 = st.columns([1, 1])
    top_n = c1.slider("Edges shown (top by |score|)", 0, j["shape"]["n_edges"],
                      min(j["shape"]["n_edges"], max(j["faithfulness"]["at_circuit"]["n_edges"], 20)), key="circ_edges")
    view = c2.radio("Edge scores from", ["all prompts", "forget prompts", "retain prompts"], horizontal=True,
                    key="circ_view")
    score_key = {"all prompts": "score", "forget prompts": "forget_score", "retain prompts": "retain_score"}[view]
    fig = figures.circuit_figure(graph, nodes, top_n, set(picked), score_key)
    st.plotly_chart(fig, width="stretch", key="circuit_graph", on_select="rerun",
                    selection_mode=("points", "box", "lasso"))

    at = j["faithfulness"]["at_circuit"]
    cols = st.columns(4)
    cols[0].metric("Circuit edges", f"{at['n_edges']} ({at['share']:.1%})")
    cols[1].metric("Recovery", f"{at['recovery']:.2f}")
    cols[2].metric("Faithfulness", f"{at['faithfulness']:.2f}")
    cols[3].metric("Agreement with exact patching (Spearman)", f"{j['agreement']['spearman_vs_patching']:.3f}")
    c1, c2 = st.columns(2)
    c1.plotly_chart(figures.faithfulness_figure(j["faithfulness"]["curve"], at), width="stretch", key="circ_faith")
    stability = j["stability"]["jaccard"]
    if stability:
        counts = {g: sum(1 for n in j["nodes"] if n["group"] == g) for g in stability}
        c2.plotly_chart(figures.bars({f"{g} ({counts[g]})": v for g, v in stability.items()},
                                     f"Group stability: Jaccard over seeds {j['stability']['seeds']}", (0, 1)),
                        width="stretch", key="circ_stab")
        c2.caption("Two empty groups count as Jaccard 1.0; the number of modules in each group is in brackets.")
    else:
        c2.info("Stability needs at least 2 seeds (sidebar).")
    e1, e2 = st.columns(2)
    e1.download_button("Export graph (node-link JSON)", json.dumps(result.graph.to_node_link()),
                       file_name="circuit.json", mime="application/json", key="circ_json")
    e2.download_button("Export figure (HTML)", fig.to_html(include_plotlyjs="cdn"), file_name="circuit.html",
                       mime="text/html", key="circ_html")
