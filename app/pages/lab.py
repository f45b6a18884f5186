"""Unlearning lab: run CURE, a baseline, or selective unlearning on chosen modules; see stored runs."""
import time

import streamlit as st

from analysis.unlearn.lab import list_runs, unlearn
from analysis.unlearn.methods import UnlearningMethod
from analysis.progress import unlearn_plan
from analysis.study.noise import TrainingNoise, study_noise
from analysis.unlearn.run import UnlearnConfig
from analysis.watched import run_watched
from app import figures, state, tables

st.title("Unlearning lab")
st.write("Every method starts from a copy of the original model and gets the same budget (epochs over the forget "
         "set, learning rate, batch). The exact answer, a model retrained without the forgotten data, is trained (or "
         "loaded) alongside and is only the judge: each run is scored against doing nothing (0) and against retrain "
         "(1).")

LIVE_REDRAW_S = 2.0


def finish_message(run: dict, noise: TrainingNoise | None = None) -> str:
    """Relative numbers first (0 = do nothing, 1 = retrain), the absolute ones with do nothing and retrain beside."""
    m, o, r, y = run["metrics"], run["original"], run["retrain"], run["yardstick"]
    closed, distance = y["gap_closed"]["auc_forget"], y.get("retrain_distance")
    gap = ("no measurable memorisation to remove" if closed is None or distance is None else
           f"distance to retrain {distance:.2f} (0 = like the retrain, 1 = as far as doing nothing; forget-AUC gap "
           f"closed {closed:.2f}, signed" + ("; past the retrain: over-forgetting" if closed > 1 else "") + ")")
    attack = m.get("mia_never_seen")
    seen = ("" if not attack else f" Matched attack (forgotten vs never-seen users, 0.5 = never seen): "
            f"{attack['run']:.3f} (do nothing {attack['original']:.3f}, retrain {attack['retrain']:.3f}).")
    ratio = "n/a" if y["jsd_ratio"] is None else f"{y['jsd_ratio']:.2f}"
    stopped = (run.get("stopped") or {}).get("reason") or "budget"
    note = f" {y['note'][0].upper()}{y['note'][1:]}." if y["note"] else ""  # a sentence of its own
    return (f"{run['method']} finished in {run['seconds']:.1f} s, {run.get('steps_run', 0)} steps ({stopped}); "
            f"retrain {run['retrain_seconds']:.0f} s. {gap[0].upper() + gap[1:]}; utility cost "
            f"{y['utility_cost']:+.4f} test AUC; JSD ratio {ratio}. Forget AUC {m['auc_forget']:.4f} (do nothing "
            f"{o['auc_forget']:.4f}, retrain {r['auc_forget']:.4f}); test AUC {m['auc_test']:.4f} (do nothing "
            f"{o['auc_test']:.4f}, retrain {r['auc_test']:.4f}).{seen}{note} "
            + (noise.quote() if noise is not None else "One retrain, one training seed: no study has measured the "
               "training-seed noise of this request yet (cure study trains two).") + " See Compare.")


with state.readable_errors():
    ws = state.workspace()
    rec = state.original()
    request, valid = state.request_input("lab_request")
    settings, thresholds = state.circuit_settings()
    c1, c2, c3, c4 = st.columns(4)
    methods = [m.value for m in UnlearningMethod]
    method = c1.selectbox("Method", methods, index=methods.index("cure"), key="lab_method")
    epochs = c2.number_input("Epochs over the forget set", 0.1, state.LIMITS.epochs, float(UnlearnConfig.epochs), 0.5,
                             key="lab_epochs", help=state.LIMITS.note(f"{state.LIMITS.epochs:g} epochs"))
    lr = c3.number_input("Learning rate", 1e-6, 1.0, UnlearnConfig.lr, format="%.5f", key="lab_lr")
    retain_specific = c4.selectbox("Retain-specific nodes", ["freeze", "retain"], key="lab_rs")
    d1, d2, d3 = st.columns(3)
    optimizer = d1.selectbox("Optimiser", ["adam", "sgd"], key="lab_opt")
    stop = d2.selectbox("Stop", ["budget", "auto", "loss"], key="lab_stop",
                        help="auto: once the forgotten users are indistinguishable from never-seen users on the "
                             "validation-period attack (checked every 10 steps; never reads the retrain); loss: "
                             "when the forget samples' loss reaches the original's loss on held-out samples")
    steps = d3.number_input("Max steps (0: the epochs decide)", 0, state.LIMITS.steps, 0, key="lab_steps",
                            help=state.LIMITS.note(f"{state.LIMITS.steps} steps"))
    modules = tuple(state.selected_modules())
    if method == "selective":
        st.info(f"Selective unlearning updates only: {', '.join(modules) or 'nothing yet, pick modules on the '}"
                + ("" if modules else "Circuits page"))
    state.cancelled("lab_cancel")
    if st.button("Run", type="primary", key="lab_run", disabled=not valid):
        cfg = UnlearnConfig(method=method, epochs=float(epochs), steps=int(steps) or None, lr=float(lr),
                            optimizer=optimizer, stop=stop, retain_specific=retain_specific,
                            modules=modules if method == "selective" else (), circuits=settings,
                            thresholds=thresholds)
        # progress first: below a growing chart it fell under the fold at 1400x900
        box, progress = state.staged_progress(unlearn_plan(method), f"{method} on {request}", ws.root,
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
        st.session_state["compare_run"] = run["run_dir"]
        waited = (f" Waited {progress.waited_seconds:.0f} s for another session's identical job (the shared cache "
                  f"builds each result once)." if progress.waited_seconds > 0 else "")
        st.success(finish_message(run, study_noise(ws, rec, str(forget.spec))) + waited)

    runs = [r for r in list_runs(ws.root) if r["forget"]["spec"] == str(ws.forget_set(request).spec)]
    st.subheader(f"Runs for {request} ({len(runs)})")
    if runs:
        tables.show_runs(runs, key="lab_runs")
    else:
        st.caption("No runs yet for this request.")
