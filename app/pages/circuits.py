"""Circuits: the graph of a deletion request coloured by node group, the specificity view, and node picking."""
import json
from dataclasses import replace

import streamlit as st

from analysis.circuits.discover import CircuitSettings, discover_circuits
from analysis.circuits.groups import GroupThresholds
from analysis.circuits.view import GRAPH_KINDS
from analysis.watched import run_watched
from app import circuit_view, figures, job_progress, state

st.title("Circuits of a deletion request")
st.write("Every embedding role (items, ratings, attributes, prompt words, positions), head, MLP and item-embedding "
         "row is scored on forget prompts and on retain prompts (attribution against counterfactual histories). "
         "A node is **forget-specific** when log(importance on forget / importance on retain) is significantly "
         "above log(tau) (a bootstrap over users, false discoveries controlled over every node tested), "
         "**retain-specific** when it is significantly below -log(tau), **task-shared** when it matters on both "
         "sides and neither is specific, **inactive** otherwise. Select nodes on the graph (item rows on its left) "
         "or in the lists: the Unlearning lab's `selective` method updates only those.")


def circuit_settings() -> tuple[CircuitSettings, GroupThresholds]:
    """Sidebar controls, starting from (and saved back to) the session's settings, shared with the lab."""
    settings, thresholds = state.circuit_settings()
    methods = ["eap-ig", "eap", "patching"]
    rules = ["specificity", "threshold"]
    with st.sidebar.expander("Circuit settings", expanded=False):
        method = st.selectbox("Attribution", methods, index=methods.index(settings.method.value), key="circ_method")
        n_prompts = st.number_input("Prompts per side", 4, state.LIMITS.prompts, min(settings.n_prompts, state.LIMITS.prompts),
                                    key="circ_prompts", help=state.LIMITS.note(f"{state.LIMITS.prompts} prompts"))
        seeds = st.number_input("Stability seeds", 1, state.LIMITS.stability_seeds,
                                min(settings.stability_seeds, state.LIMITS.stability_seeds), key="circ_seeds",
                                help=state.LIMITS.note(f"{state.LIMITS.stability_seeds} seeds"))
        grains = ["modules", "neurons"]
        granularity = st.radio("Granularity", grains, index=grains.index(settings.granularity), horizontal=True,
                               key="circ_grain", help="neurons: every MLP hidden unit becomes a node (EAP / EAP-IG)")
        rule = st.radio("Group rule", rules, index=rules.index(thresholds.rule.value), key="circ_rule", horizontal=True)
        if rule == "specificity":
            tau = st.slider("tau (ratio a specific node must clear)", 1.0, 8.0, float(thresholds.tau), 0.25,
                            key="circ_tau")
            floor = st.slider("Importance floor (x a uniform share)", 0.0, 3.0, float(thresholds.floor), 0.1,
                              key="circ_floor")
            fdr = st.slider("False-discovery level (Benjamini-Hochberg)", 0.01, 0.20, float(thresholds.fdr), 0.01,
                            key="circ_fdr", help="Expected share of false calls among the nodes called specific, "
                                                 "controlled over every node and side tested")
            min_users = st.number_input("Min users per side for an item row", 1, 50, int(thresholds.min_users),
                                        key="circ_min_users", help="A row is tested on a side only when the "
                                        "prompts of this many of that side's users contain it")
            f, r = thresholds.forget, thresholds.retain
        else:
            f = st.slider("Forget threshold (x mean node)", 0.0, 3.0, float(thresholds.forget), 0.1, key="circ_ft")
            r = st.slider("Retain threshold (x mean node)", 0.0, 3.0, float(thresholds.retain), 0.1, key="circ_rt")
            tau, floor, fdr, min_users = thresholds.tau, thresholds.floor, thresholds.fdr, thresholds.min_users
    return state.set_circuit_settings(
        # replace, not rebuild: settings without a control here (retain samples, targets) keep their values
        replace(settings, method=method, n_prompts=int(n_prompts), stability_seeds=int(seeds), granularity=granularity),
        # the rule relabels the cached scores: none of these is part of a cache key
        GroupThresholds(f, r, rule=rule, tau=tau, floor=floor, fdr=float(fdr), min_users=int(min_users)))


with state.readable_errors():
    ws = state.workspace()
    rec = state.original()
    request, _ = state.request_input("circ_request")
    settings, thresholds = circuit_settings()
    forget = ws.forget_set(request)
    if job_progress.cancelled("circ_cancel") or st.session_state.get("circ_paused"):
        # a cancelled discovery does not restart by itself on the rerun the Cancel click caused
        st.session_state["circ_paused"] = True
        if not st.button("Find circuits", key="circ_resume"):
            st.stop()
        st.session_state.pop("circ_paused")
    box, progress = job_progress.staged_progress("circuits", "Finding circuits (cached after the first time)", ws.root,
                                          cancel_key="circ_cancel")
    result = run_watched(lambda p: discover_circuits(ws, rec, forget, settings, thresholds, p), progress)
    progress.finish()
    box.empty()
    view = result.view()
    by_name = view.by_name
    graph, nodes = circuit_view.build_graph(result.graph.to_networkx(), view)
    roles = view.of_kind("embedding")

    graph_nodes = [n.name for n in view.of_kind(*GRAPH_KINDS)]
    # group members first in the picker's list too
    item_rows = [n.name for n in circuit_view.sort_rows(view.of_kind("item-row"))]
    neurons = view.of_kind("neuron")
    state.sync_graph_selection(st.session_state, "circuit_graph", state.SessionKey.MODULE_PICKER.key,
                               state.SessionKey.ROW_PICKER.key, ignore=(circuit_view.MORE_ROWS,))
    rows_open = circuit_view.MORE_ROWS in state.graph_selection(st.session_state, "circuit_graph")
    chosen = state.selected_modules()
    p1, p2 = st.columns([3, 2])
    picked = p1.multiselect("Selected roles, heads and MLPs (for selective unlearning)", graph_nodes,
                            key=state.picker(state.SessionKey.MODULE_PICKER, [m for m in chosen if m in graph_nodes]))
    picked_rows = p2.multiselect(f"Selected item rows ({len(item_rows)}; type a title to search)", item_rows,
                                 key=state.picker(state.SessionKey.ROW_PICKER, [m for m in chosen if m in item_rows]),
                                 format_func=lambda n: f"{by_name[n].label} ({n})")
    picked_units: list[str] = []
    if neurons:
        mlps = [n for n in graph_nodes if by_name[n].kind == "mlp"]
        d1, d2 = st.columns([1, 3])
        drill = d1.selectbox("Drill into an MLP's neurons", mlps, key="circ_drill")
        units = sorted((n for n in neurons if n.name.startswith(f"{drill}.")), key=lambda n: -n.specificity.estimate)
        picked_units = d2.multiselect(f"Selected neurons ({len(neurons)} in all; {drill}'s listed by specificity)",
                                      sorted({n.name for n in neurons}),
                                      key=state.picker(state.SessionKey.UNIT_PICKER,
                                                       [m for m in chosen if m.startswith("m") and ".n" in m]))
        st.dataframe([{"neuron": n.name, "group": n.group, "specificity": round(n.specificity.estimate, 3),
                       "low": round(n.specificity.low, 3), "high": round(n.specificity.high, 3)}
                      for n in units[:50]], width="stretch", hide_index=True, key="circ_units", height=200)
    state.set_selected_modules(list(picked) + list(picked_rows) + list(picked_units))
    st.markdown(circuit_view.summary_markdown(view))
    st.markdown(circuit_view.rule_line(view))

    c1, c2 = st.columns([1, 1])
    at = view.at_circuit
    top_n = c1.slider("Edges shown (top by |score|)", 0, view.n_edges, min(view.n_edges, at.n_edges), key="circ_edges")
    scores_from = c2.radio("Edge scores from", ["all prompts", "forget prompts", "retain prompts"], horizontal=True,
                    key="circ_view")
    score_key = dict(zip(("all prompts", "forget prompts", "retain prompts"), circuit_view.SCORE_KEYS))[scores_from]
    # role -> input edges rank with the rest; row -> layer 0 edges are drawn apart, outside top_n
    fig = figures.circuit_figure(graph, nodes, top_n + len(roles), set(picked) | set(picked_rows), score_key)
    st.plotly_chart(fig, width="stretch", key="circuit_graph", on_select="rerun",
                    selection_mode=("points", "box", "lasso"))

    cols = st.columns(4)
    cols[0].metric("Circuit edges", f"{at.n_edges} ({at.share:.1%})")
    cols[1].metric("Recovery", f"{at.recovery:.2f}")
    cols[2].metric("Faithfulness", f"{at.faithfulness:.2f}")
    rho = view.spearman_vs_patching
    cols[3].metric("Spearman vs patching", "n/a" if rho is None else f"{rho:.3f}",  # a label that fits a quarter
                   help="Rank agreement (Spearman) of the attribution scores with exact activation patching")

    st.subheader("Specificity: forget importance vs retain importance")
    scored = [n for n in view.nodes if n.specificity is not None]
    s1, s2 = st.columns([3, 2])
    s1.plotly_chart(figures.specificity_figure(scored, thresholds.tau, view.floor_share,
                                               "Each node's share of its family's attribution (diamonds: item rows)"),
                    width="stretch", key="circ_spec")
    active = sorted((n for n in scored if n.group != "inactive"), key=lambda n: -abs(n.specificity.estimate))[:25]
    s2.plotly_chart(figures.interval_figure(active, thresholds.tau, "95% intervals of the most specific active nodes"),
                    width="stretch", key="circ_intervals")
    # opened by selecting the graph's "+N more rows" node
    with st.expander(f"Item rows by group and specificity ({len(item_rows)} items)", expanded=rows_open):
        st.dataframe(circuit_view.rows_table([by_name[n] for n in item_rows]), width="stretch", hide_index=True,
                     key="circ_rows")

    c1, c2 = st.columns(2)
    c1.plotly_chart(figures.faithfulness_figure(view.curve, at), width="stretch", key="circ_faith")
    if view.stability:
        c2.plotly_chart(figures.stability_figure(view.stability), width="stretch", key="circ_stab")
        empty = [f"{g} ({kind}s)" for kind, d in view.stability.items() for g, v in d.jaccard.items() if v is None]
        c2.caption("Each bar: the mean pairwise Jaccard of a group's members over the draws of that kind (draw 0 "
                   "and the other prompt seeds, or the other retain samples), its size on each draw beside it. "
                   + (f"Empty on every draw (no agreement to measure): {', '.join(empty)}." if empty else ""))
    else:
        c2.info("Stability needs at least 2 prompt seeds or retain samples (sidebar: stability seeds).")
    if view.forget_grad_share is not None:
        st.caption(f"Owned parameters hold {view.forget_grad_share:.1%} of the forget gradient's squared norm; "
                   f"CURE's rules move the {view.moved_by_cure:.1%} in forget-specific and task-shared nodes.")
    e1, e2 = st.columns(2)
    e1.download_button("Export graph (node-link JSON)", json.dumps(result.graph.to_node_link()),
                       file_name="circuit.json", mime="application/json", key="circ_json")
    e2.download_button("Export figure (HTML)", fig.to_html(include_plotlyjs="cdn"), file_name="circuit.html",
                       mime="text/html", key="circ_html")
