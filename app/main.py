"""Overview page: the dataset card and the model card. The full explorer comes later.

Holds no model math: everything shown comes from analysis/.
"""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from analysis.config import DataConfig, ModelConfig, TrainConfig
from analysis.errors import CureError
from analysis.evaluate import baseline_metrics
from analysis.model.recommender import Recommender
from analysis.model.sequences import PromptBuilder
from analysis.model.train import train_recommender
from analysis.workspace import Workspace, open_workspace


def _bar(label: str):
    bar = st.progress(0.0, text=label)

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {stage} {done}/{total}")

    return bar, progress


@st.cache_resource(show_spinner=False)
def workspace(source: str | None, history: int) -> Workspace:
    bar, progress = _bar("Preparing data")
    ws = open_workspace(DataConfig(source=source, history=history), progress=progress)
    bar.empty()
    return ws


@st.cache_resource(show_spinner=False)
def default_model(_ws: Workspace, fingerprint: str) -> Recommender:  # fingerprint keys the cache
    bar, progress = _bar("Training the default model (first launch only)")
    rec = train_recommender(_ws, None, ModelConfig(), TrainConfig(), progress=progress)
    bar.empty()
    return rec


@st.cache_data(show_spinner=False)
def baseline(_ws: Workspace, fingerprint: str) -> dict:
    return baseline_metrics(_ws)


def dataset_card(ws: Workspace) -> None:
    s = ws.data.summary()
    split = ws.interactions.summary()
    st.subheader("Dataset")
    st.caption(s["source"])
    cols = st.columns(4)
    cols[0].metric("Users", f"{s['users']:,}")
    cols[1].metric("Items", f"{s['items']:,}")
    cols[2].metric("Ratings", f"{s['ratings']:,}")
    cols[3].metric("Like rate (rating > 3)", f"{s['like_rate']:.1%}")
    st.write(f"Samples with {split['history_length']} items of history: "
             f"{split['samples']['train']:,} train, {split['samples']['valid']:,} validation, "
             f"{split['samples']['test']:,} test.")
    genres = pd.Series(s["genres"], name="movies").sort_values(ascending=False)
    st.bar_chart(genres, horizontal=True)


def model_card(ws: Workspace, rec: Recommender, base: dict) -> None:
    st.subheader("Model")
    cfg = rec.model.config
    m = rec.meta["metrics"]
    cols = st.columns(4)
    cols[0].metric("Backbone", rec.meta.get("backbone") or "GPT-2 (from scratch)")
    cols[1].metric("Layers x heads", f"{cfg.n_layer} x {cfg.n_head}")
    cols[2].metric("Parameters", f"{rec.meta['n_params']:,}")
    cols[3].metric("Train seconds", f"{rec.meta['training']['train_seconds']:.0f}")
    table = pd.DataFrame({
        "model": [m["test"]["auc"], m["test"]["acc"], m["test"]["logloss"], m["ranking"]["hr@10"],
                  m["ranking"]["ndcg@10"]],
        "user+item bias baseline": [base["test"]["auc"], base["test"]["acc"], base["test"]["logloss"],
                                    base["ranking"]["hr@10"], base["ranking"]["ndcg@10"]],
    }, index=["test AUC", "test ACC", "test LogLoss", "HR@10", "NDCG@10"])
    st.dataframe(table.style.format("{:.4f}"), width="stretch")
    rows = ws.interactions.split("test").head(1)
    sample = rows.iloc[0]
    tokens = rec.tokenizer.convert_ids_to_tokens(PromptBuilder(rec.fmt, ws.interactions).prompts(rows)[0])
    st.caption(f"Example prompt (user {sample['user_id']}, target {ws.title(sample['item_id'])}), token by token; "
               "the answer is read after the last token as logit(Yes) - logit(No):")
    st.code(" | ".join(tokens), language=None)


def main() -> None:
    st.set_page_config(page_title="CURE Explorer", layout="wide")
    st.title("CURE Explorer")
    st.write("How an LLM-based recommender forgets: circuits, selective unlearning, before and after.")
    try:
        # CURE_DATA / CURE_HISTORY pick another dataset folder or history length (tests use a tiny one).
        ws = workspace(os.environ.get("CURE_DATA") or None, int(os.environ.get("CURE_HISTORY", "10")))
        dataset_card(ws)
        rec = default_model(ws, ws.fingerprint)
        model_card(ws, rec, baseline(ws, ws.fingerprint))
    except CureError as exc:
        st.error(str(exc))
