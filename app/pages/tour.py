"""Guided tour: one path through the pages for a teaching demo, one picture at a time."""
import streamlit as st

STEPS = [
    ("app/pages/overview.py", "1. The recommender",
     "A small GPT-2 reads a user's attributes and last rated movies and answers Yes/No for a candidate movie. "
     "The model card shows it beats a user+item bias baseline on test AUC."),
    ("app/pages/trace.py", "2. One recommendation, opened up",
     "Pick a user and a movie. The bars show which heads and MLPs push the answer toward Yes (up) or No (down); "
     "the heatmap shows which earlier movies a head attends to when it answers."),
    ("app/pages/circuits.py", "3. Circuits of a deletion request",
     "For a request like 'forget 10% of users', every embedding role, head, MLP and item-embedding row is scored "
     "on forget and on retain prompts. A node is forget-specific only when the 95% interval of its importance "
     "ratio (forget / retain) clears tau; the specificity view shows each interval. The curve shows how few "
     "edges recover the model's behaviour. The first discovery of a request takes a minute or two; then it is "
     "cached. Lasso a few nodes (or pick item rows by title) to use them next."),
    ("app/pages/lab.py", "4. Unlearning",
     "Run CURE (each group updated by its own rule), `selective` (CURE's rules on just the nodes you picked) or "
     "a baseline that updates everything. The retrained model, the gold standard, is trained alongside."),
    ("app/pages/compare.py", "5. Before and after",
     "Rankings of a forgotten and a retained user, metrics next to retrain, the gradient-conflict heatmaps "
     "before and after, and every run on the forgetting-vs-utility plane."),
]

st.title("Guided tour")
step = st.session_state.setdefault("tour_step", 0)
page, title, text = STEPS[step]
st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}")
st.subheader(title)
st.write(text)
if page.endswith("circuits.py"):
    # the step's claims, computed from this session's request when its circuits are already cached
    from analysis.circuits.discover import cached_circuits
    from app import state

    with state.readable_errors():
        settings, thresholds = state.circuit_settings()
        ws, request = state.workspace(), state.request()
        result = cached_circuits(ws, state.original(), ws.forget_set(request), settings, thresholds)
        if result is None:
            st.info(f"The circuits of '{request}' are not computed yet: open the Circuits page (first time: a "
                    f"minute or two).")
        else:
            sizes = result.node_groups.sizes()
            msg = (f"On '{request}': {sizes['forget-specific']} forget-specific, {sizes['retain-specific']} "
                   f"retain-specific, {sizes['task-shared']} task-shared and {sizes['inactive']} inactive nodes.")
            if sizes["forget-specific"] == 0:
                msg += (" The forget group is empty: no node's interval clears tau, i.e. the forgotten samples "
                        "use the model the way retained ones do. CURE then only moves task-shared nodes, with "
                        "the forget gradient projected off the retain gradient where they conflict.")
            st.markdown(msg)
st.page_link(page, label=f"Open: {title[3:]}", icon=":material/arrow_forward:")
c1, c2 = st.columns(2)
if c1.button("Previous", disabled=step == 0, key="tour_prev"):
    st.session_state["tour_step"] = step - 1
    st.rerun()
if c2.button("Next", disabled=step == len(STEPS) - 1, key="tour_next"):
    st.session_state["tour_step"] = step + 1
    st.rerun()
