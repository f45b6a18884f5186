"""Unlearning lab: run CURE, a baseline, or selective unlearning on chosen modules; see stored runs."""
import time

import streamlit as st

from analysis.unlearn.lab import list_runs, unlearn
from analysis.unlearn.record import RunRecord
from analysis.unlearn.methods import RetainSpecific, UnlearningMethod
from analysis.unlearn.registry import spec_of
from analysis.study.noise import TrainingNoise
from analysis.study.result import study_noise
from analysis.unlearn.run import OPTIMIZERS, STOPS, UnlearnConfig
from analysis.watched import run_watched
from app import figures, job_progress, state, tables

st.title("Unlearning lab")
st.write("Every method starts from a copy of the original model and gets the same budget (epochs over the forget "
         "set, learning rate, batch). The exact answer, a model retrained without the forgotten data, is trained (or "
         "loaded) alongside and is only the judge: each run is scored against doing nothing (0) and against retrain "
         "(1).")

LIVE_REDRAW_S = 2.0

# One control per UnlearnConfig field a person may set here, drawn in a given column and returning the config's
# value. A method shows those its spec reads (MethodSpec.options: e.g. retain-specific nodes only for the circuit
# methods, the salient share only for salun, nothing for retrain); the choices are run.py's and the defaults
# UnlearnConfig's, so the page never restates which method takes what.
CONTROLS = {
    "epochs": lambda col: float(col.number_input(
        "Epochs over the forget set", 0.1, state.LIMITS.epochs, float(UnlearnConfig.epochs), 0.5, key="lab_epochs",
        help=state.LIMITS.note(f"{state.LIMITS.epochs:g} epochs"))),
    "lr": lambda col: float(col.number_input("Learning rate", 1e-6, 1.0, UnlearnConfig.lr, format="%.5f",
                                             key="lab_lr")),
    "retain_specific": lambda col: col.selectbox(
        "Retain-specific nodes", [r.value for r in RetainSpecific],
        index=list(RetainSpecific).index(UnlearnConfig.retain_specific), key="lab_rs"),
    "optimizer": lambda col: col.selectbox("Optimiser", OPTIMIZERS, index=OPTIMIZERS.index(UnlearnConfig.optimizer),
                                           key="lab_opt"),
    "stop": lambda col: col.selectbox(
        "Stop", STOPS, index=STOPS.index(UnlearnConfig.stop), key="lab_stop",
        help="auto: once the forgotten users are indistinguishable from never-seen users on the validation-period "
             "attack (checked every 10 steps; never reads the retrain); loss: when the forget samples' loss reaches "
             "the original's loss on held-out samples"),
    "steps": lambda col: int(col.number_input(
        "Max steps (0: the epochs decide)", 0, state.LIMITS.steps, 0, key="lab_steps",
        help=state.LIMITS.note(f"{state.LIMITS.steps} steps"))) or None,
    "saliency": lambda col: float(col.number_input(
        "Salient share of parameters", 0.01, 1.0, UnlearnConfig.saliency, 0.05, key="lab_saliency",
        help="The share of parameter elements updated: those with the largest forget gradient, fixed at the start")),
}


def finish_message(run: RunRecord, noise: TrainingNoise | None = None) -> str:
    """Relative numbers first (0 = do nothing, 1 = retrain), the absolute ones with do nothing and retrain beside."""
    m, o, r, y = run.metrics, run.original, run.retrain, run.yardstick
    closed, distance = y.gap_closed.auc_forget, y.retrain_distance
    gap = ("no measurable memorisation to remove" if closed is None or distance is None else
           f"distance to retrain {distance:.2f} (0 = like the retrain, 1 = as far as doing nothing; forget-AUC gap "
           f"closed {closed:.2f}, signed" + ("; past the retrain: over-forgetting" if closed > 1 else "") + ")")
    attack = run.comparison.attack
    seen = ("" if not attack else f" Matched attack (forgotten vs never-seen users, 0.5 = never seen): "
            f"{attack.auc.run:.3f} (do nothing {attack.auc.original:.3f}, retrain {attack.auc.retrain:.3f}).")
    ratio = "n/a" if y.jsd_ratio is None else f"{y.jsd_ratio:.2f}"
    stopped = run.stopped.reason if run.stopped else "budget"
    note = f" {y.note[0].upper()}{y.note[1:]}." if y.note else ""  # a sentence of its own
    return (f"{run.method.value} finished in {run.seconds:.1f} s, {run.steps_run} steps ({stopped}); "
            f"retrain {run.retrain_seconds:.0f} s. {gap[0].upper() + gap[1:]}; utility cost "
            f"{y.utility_cost:+.4f} test AUC; JSD ratio {ratio}. Forget AUC {m.auc_forget:.4f} (do nothing "
            f"{o.auc_forget:.4f}, retrain {r.auc_forget:.4f}); test AUC {m.auc_test:.4f} (do nothing "
            f"{o.auc_test:.4f}, retrain {r.auc_test:.4f}).{seen}{note} "
            + (noise.quote() if noise is not None else "One retrain, one training seed: no study has measured the "
               "training-seed noise of this request yet (cure study trains two).") + " See Compare.")


with state.readable_errors():
    ws = state.workspace()
    rec = state.original()
    request, valid = state.request_input("lab_request")
    settings, thresholds = state.circuit_settings()
    first, *row1 = st.columns(4)
    row2 = st.columns(4)
    methods = [m.value for m in UnlearningMethod]
    method = first.selectbox("Method", methods, index=methods.index(UnlearnConfig.method.value), key="lab_method")
    spec = spec_of(method)
    # a fixed column per control, shown or not: a control that moved between columns when the method changed left
    # its old copy in the browser for a moment (two "Max steps" boxes in CI's browser test)
    slots = dict(zip(CONTROLS, row1 + row2))
    values = {name: CONTROLS[name](slots[name]) for name in CONTROLS if name in spec.options}
    modules = tuple(state.selected_modules())
    if "modules" in spec.options:
        st.info(f"Selective unlearning updates only: {', '.join(modules) or 'nothing yet, pick modules on the '}"
                + ("" if modules else "Circuits page"))
    job_progress.cancelled("lab_cancel")
    if st.button("Run", type="primary", key="lab_run", disabled=not valid):
        cfg = UnlearnConfig(method=method, **values, modules=modules if "modules" in spec.options else (),
                            circuits=settings, thresholds=thresholds)
        # progress first: below a growing chart it fell under the fold at 1400x900
        box, progress = job_progress.staged_progress(spec.plan, f"{method} on {request}", ws.root,
                                              cancel_key="lab_cancel")
        live = st.empty()
        rows: list[dict] = []
        drawn = [0.0]

        def on_step(row: dict) -> None:
            # redrawn at most every LIVE_REDRAW_S: redrawing the chart at every step made a 115-step run take
            # 146 s in Chromium instead of 25 s (the browser re-renders it on the same 2 cores)
            rows.append(row)
            if time.monotonic() - drawn[0] >= LIVE_REDRAW_S or row["step"] == cfg.n_steps(n_forget):
                drawn[0] = time.monotonic()
                live.plotly_chart(figures.loss_curves(rows), width="stretch")

        forget = ws.forget_set(request)
        n_forget = len(forget.forget_samples)
        run = run_watched(lambda p, step: unlearn(ws, rec, forget, cfg, p, step), progress, step=on_step)
        progress.finish()
        box.done()
        state.set_compare_run(run.run_dir)
        waited = (f" Waited {progress.waited_seconds:.0f} s for another session's identical job (the shared cache "
                  f"builds each result once)." if progress.waited_seconds > 0 else "")
        st.success(finish_message(run, study_noise(ws, rec, str(forget.spec))) + waited)

    runs = [r for r in list_runs(ws.root) if r.forget.spec == str(request)]
    st.subheader(f"Runs for {request} ({len(runs)})")
    if runs:
        tables.show_runs(runs, key="lab_runs")
    else:
        st.caption("No runs yet for this request.")
