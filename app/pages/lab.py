"""Unlearning lab: run CURE, a baseline, or selective unlearning on chosen modules; see stored runs."""
import pandas as pd
import streamlit as st

from analysis.unlearn.lab import list_runs, unlearn
from analysis.unlearn.methods import Method
from analysis.unlearn.run import UnlearnConfig
from app import state

st.title("Unlearning lab")
st.write("Every method starts from a copy of the original model and gets the same budget (steps, learning rate, "
         "batch). The exact answer, a model retrained without the forgotten data, is trained (or loaded) alongside "
         "and every run is measured against it.")

TRAINING, UNLEARNING = {"train"}, {"unlearn"}


def progress_router():
    """One bar per part of the job: retrain, circuits, the unlearning steps, evaluation."""
    bars = {name: state.progress_bar(name) for name in ("Retrain (same request)", "Circuits", "Unlearning",
                                                         "Evaluation")}

    def progress(stage: str, done: int, total: int) -> None:
        if stage in TRAINING:
            bars["Retrain (same request)"][1](stage, done, total)
        elif stage in UNLEARNING:
            bars["Unlearning"][1](stage, done, total)
        elif stage in ("score", "rank"):
            bars["Evaluation"][1](stage, done, total)
        else:
            bars["Circuits"][1](stage, done, total)
    return progress


with state.readable_errors():
    ws = state.workspace()
    rec = state.original()
    request = st.text_input("Deletion request", state.request(), key="lab_request")
    st.session_state["request"] = request
    settings, thresholds = state.circuit_settings()
    c1, c2, c3, c4 = st.columns(4)
    methods = [m.value for m in Method]
    method = c1.selectbox("Method", methods, index=methods.index("cure"), key="lab_method")
    steps = c2.number_input("Steps", 1, 500, UnlearnConfig.steps, key="lab_steps")
    lr = c3.number_input("Learning rate (SGD)", 1e-5, 1.0, UnlearnConfig.lr, format="%.4f", key="lab_lr")
    retain_specific = c4.selectbox("Retain-specific modules", ["freeze", "retain"], key="lab_rs")
    modules = tuple(state.selected_modules())
    if method == "selective":
        st.info(f"Selective unlearning updates only: {', '.join(modules) or 'nothing yet, pick modules on the '}"
                + ("" if modules else "Circuits page"))
    if st.button("Run", type="primary", key="lab_run"):
        cfg = UnlearnConfig(method=method, steps=int(steps), lr=float(lr), retain_specific=retain_specific,
                            modules=modules if method == "selective" else (), circuits=settings,
                            thresholds=thresholds)
        live = st.empty()
        rows: list[dict] = []

        def on_step(row: dict) -> None:
            rows.append(row)
            live.line_chart(pd.DataFrame(rows).set_index("step")[["forget_bce", "retain_bce"]])

        run = unlearn(ws, rec, ws.forget_set(request), cfg, progress_router(), on_step)
        st.session_state["compare_run"] = run["run_dir"]
        st.success(f"{run['method']} finished in {run['seconds']:.1f} s (retrain: {run['retrain_seconds']:.0f} s). "
                   f"JSD to retrain on forget samples {run['metrics']['jsd_forget']:.4f}; test AUC "
                   f"{run['metrics']['auc_test']:.4f} (retrain {run['retrain']['auc_test']:.4f}). See Compare.")

    runs = [r for r in list_runs(ws.root) if r["forget"]["spec"] == str(ws.forget_set(request).spec)]
    st.subheader(f"Runs for {request} ({len(runs)})")
    if runs:
        table = pd.DataFrame([{"method": r["method"], "steps": r["config"].get("steps"), "lr": r["config"].get("lr"),
                               "JSD forget": r["metrics"]["jsd_forget"], "JSD test": r["metrics"]["jsd_test"],
                               "AUC test": r["metrics"]["auc_test"], "AUC forget": r["metrics"]["auc_forget"],
                               "MIA AUC": r["metrics"]["mia_auc"], "seconds": r["seconds"],
                               "run": r["run_dir"].split("/")[-1]} for r in runs])
        st.dataframe(table, width="stretch", hide_index=True, key="lab_runs")
    else:
        st.caption("No runs yet for this request.")
