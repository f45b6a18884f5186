"""The runs table the lab and the Evidence page both show: stored runs of one request, ranked by retrain
distance and utility cost, with do nothing and the retrain beside them (display only: the rows are
analysis.unlearn.lab's summaries)."""
from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st

from analysis.pareto import rank_runs
from analysis.unlearn.lab import reference_summaries, run_summary
from analysis.unlearn.record import RunRecord

COLUMNS = {"method": "method", "steps": "steps", "lr": "lr", "retrain_distance": "distance to retrain",
           "gap_closed": "gap closed (signed)", "utility_cost": "utility cost", "matched_attack": "matched attack",
           "auc_test": "AUC test", "auc_forget": "AUC forget", "jsd_forget": "JSD forget", "seconds": "seconds",
           "run": "run"}
# one precision per column (the stored values keep full precision: Compare's download)
FORMATS = {"lr": "{:g}", "steps": "{:.0f}", "distance to retrain": "{:.2f}", "gap closed (signed)": "{:.2f}",
           "utility cost": "{:+.4f}", "matched attack": "{:.3f}", "AUC test": "{:.4f}", "AUC forget": "{:.4f}",
           "JSD forget": "{:.5f}", "seconds": "{:.1f}"}


MISSING = "–"  # steps and lr of do nothing and the retrain: Streamlit draws a missing number as a grey "None"


def runs_table(runs: list[RunRecord], references: bool = True) -> pd.DataFrame:
    """Best first (rank_runs: an over-forgetting run does not rank above one on target), then, with
    `references`, do nothing and the retrain; every cell formatted text, one precision per column, a dash
    where a row has no value (a Styler's na_rep does not reach Streamlit's grid)."""
    order = rank_runs([r.yardstick.retrain_distance for r in runs], [r.yardstick.utility_cost or 0.0 for r in runs])
    rows = [run_summary(runs[i]) for i in order]
    if references and runs:
        rows += reference_summaries(runs[0])
    table = pd.DataFrame([asdict(row) for row in rows], columns=list(COLUMNS)).rename(columns=COLUMNS).astype(object)
    for column, fmt in FORMATS.items():
        table[column] = [MISSING if pd.isna(v) else fmt.format(v) for v in table[column]]
    return table.fillna(MISSING)


def show_runs(runs: list[RunRecord], key: str) -> None:
    """The runs table as the lab and Evidence draw it: numbers right-aligned although they are text."""
    right = {name: st.column_config.TextColumn(name, alignment="right") for name in FORMATS}
    st.dataframe(runs_table(runs), width="stretch", hide_index=True, key=key, column_config=right)
