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
     "For a request like 'forget 10% of users', every module is scored on forget and on retain prompts. Colours "
     "are the groups CURE uses; the curve shows how few edges recover the model's behaviour; the bars show the "
     "groups are the same across seeds. Lasso a few modules to use them next."),
    ("app/pages/lab.py", "4. Unlearning",
     "Run CURE (each group updated by its own rule) or a baseline that updates everything. The retrained model, "
     "the gold standard, is trained alongside. Watch the forget and retain losses step by step."),
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
st.page_link(page, label=f"Open: {title[3:]}", icon=":material/arrow_forward:")
c1, c2 = st.columns(2)
if c1.button("Previous", disabled=step == 0, key="tour_prev"):
    st.session_state["tour_step"] = step - 1
    st.rerun()
if c2.button("Next", disabled=step == len(STEPS) - 1, key="tour_next"):
    st.session_state["tour_step"] = step + 1
    st.rerun()
