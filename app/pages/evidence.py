"""Evidence: the studies in cache/reports (Pareto, rates, levels, reproducibility, privacy), and a quick one."""
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.progress import TIMINGS, measured_seconds, typical_seconds
from analysis.study import run_and_report
from analysis.study.executors import make_executor
from analysis.study.grid import StudyConfig
from analysis.study.report import figures, transfer_rows
from analysis.study.result import list_reports
from analysis.study.tables import ABLATION_NOTE, NO_NOISE, NOISE_NOTE, ablation_rows, noise_rows
from analysis.unlearn.lab import list_runs
from analysis.watched import run_watched
from app import job_progress, state, tables

st.title("Evidence")
st.write("A claim that circuit-aware unlearning beats uniform unlearning is worth as much as the evidence beside "
         "it. A study runs every method at several strengths, several deletion rates and levels, repeats the "
         "circuit split, and measures membership inference; `cure study` runs the same from the command line.")
with state.readable_errors():
    ws = state.workspace()
    rec = state.original()
    st.caption("The quick study is the same as `cure study --quick` (same cells, same circuit settings, same "
               "report), so one started here is resumed there and the other way round.")
    job_progress.cancelled("ev_cancel")
    where = st.radio("Run cells", ["here", "on Ray"], horizontal=True, key="ev_executor",
                     help="On Ray: each cell is a Ray task on the cluster at $CURE_RAY_ADDRESS (else a local "
                          "instance); the cache must be on storage every node mounts at the same path.")
    if st.button("Run a quick study (1 seed, fewer cells; resumes if interrupted)", key="ev_run",
                 help=state.LIMITS.note("the quick study; `cure study` runs the full one")):
        box, progress = job_progress.staged_progress("study", "Quick study", ws.root, cancel_key="ev_cancel")
        executor = make_executor("ray", os.environ.get("CURE_RAY_ADDRESS")) if where == "on Ray" else None
        path, _ = run_watched(lambda p: run_and_report(ws, rec, StudyConfig.quick(), p, executor=executor), progress)
        progress.finish()
        box.done()
        state.set_evidence_pick(str(path))
        st.success(f"Report written to {path / 'report.html'}")
    reports = list_reports(ws.root)
    if not reports:
        took = measured_seconds("study", Path(ws.root) / TIMINGS)
        st.info("No studies yet. A quick study " + (f"took {took / 60:.0f} min on this machine last time." if took
                else f"has not run on this machine yet; budget about {typical_seconds('study', None) / 60:.0f} min "
                     "on 2 cores (cells already in the cache are not run again)."))
        request = state.request()
        runs = [r for r in list_runs(ws.root) if r.forget.spec == str(request)]
        st.subheader(f"What the cache already knows about {request}")
        if runs:
            st.caption("The runs made so far, nearest the retrain first, with do nothing and the retrain beside them "
                       "(one deletion draw and one training seed each: a study repeats them).")
            tables.show_runs(runs, key="ev_known_runs")
        else:
            st.caption("No runs of this request yet: the Unlearning lab makes one, or a quick study makes many.")
        st.stop()
    report = state.pick_stored("Study", reports, lambda r: str(r.path), lambda r: r.label, state.SessionKey.EVIDENCE_PICK,
                               "ev_pick")
    path, result = report.path, report.result
    st.caption(f"Compared in the rate and level sections: {', '.join(result.compared_methods)}.")
    for name, fig in figures(result).items():
        st.plotly_chart(fig, width="stretch", key=f"ev_{name}")
    cols = ["method", "lr", "n_seeds", "jsd_forget", "jsd_forget_std", "original_jsd_forget", "auc_test",
            "auc_test_std", "auc_forget", "original_auc_forget", "mia_auc", "mia_auc_std", "seconds"]
    st.subheader("Pareto table")
    st.caption("original_*: the model before unlearning, i.e. what doing nothing scores.")
    table = pd.DataFrame(result.pareto)
    st.dataframe(table[[c for c in cols if c in table]], hide_index=True, width="stretch", key="ev_table")
    arms, diffs = ablation_rows(result)
    if arms:
        st.subheader("Ablation: does the rule matter, and does the circuit?")
        st.caption(ABLATION_NOTE)
        st.dataframe(pd.DataFrame(arms), hide_index=True, width="stretch", key="ev_ablation")
        st.dataframe(pd.DataFrame(diffs), hide_index=True, width="stretch", key="ev_ablation_diffs")
    st.subheader("Training-seed noise")
    draws, methods = noise_rows(result)
    st.caption(NOISE_NOTE if draws else NO_NOISE)
    if draws:
        st.dataframe(pd.DataFrame(draws), hide_index=True, width="stretch", key="ev_noise")
        st.dataframe(pd.DataFrame(methods), hide_index=True, width="stretch", key="ev_noise_methods")
    st.subheader("Transfer")
    st.caption("CURE with groups found on another deletion draw, or on a same-recipe model of a second dataset "
               "(`cure study --transfer-data latest-small`).")
    st.dataframe(pd.DataFrame(transfer_rows(result)), hide_index=True, width="stretch", key="ev_transfer")
    with open(f"{path}/report.html", "rb") as f:
        st.download_button("Download the report (HTML)", f.read(), file_name="cure-study.html", mime="text/html",
                           key="ev_download")
