"""Guided tour: one path through the pages for a teaching demo, each step stated from this request's results."""
import streamlit as st

from analysis.tour import tour_facts, tour_steps
from app import state

st.title("Guided tour")
with state.readable_errors():
    ws, rec = state.workspace(), state.original()
    settings, thresholds = state.circuit_settings()
    facts = tour_facts(ws, rec, state.request(), settings, thresholds, state.baseline(ws, ws.fingerprint),
                       tuple(state.selected_modules()))
    steps = tour_steps(facts)
    step = min(state.tour_step(), len(steps) - 1)
    current = steps[step]
    st.progress((step + 1) / len(steps), text=f"Step {step + 1} of {len(steps)}")
    st.subheader(current.title)
    st.write(current.text)
    st.page_link(current.page, label=f"Open: {current.title[3:]}", icon=":material/arrow_forward:")
    c1, c2 = st.columns(2)
    if c1.button("Previous", disabled=step == 0, key="tour_prev"):
        state.set_tour_step(step - 1)
        st.rerun()
    if c2.button("Next", disabled=step == len(steps) - 1, key="tour_next"):
        state.set_tour_step(step + 1)
        st.rerun()
