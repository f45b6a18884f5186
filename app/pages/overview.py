"""Overview: the dataset card, the model card and one example prompt, token by token."""
from dataclasses import astuple
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.circuits.trace import token_labels
from analysis.model.evaluate import ModelCard, Scorecard
from analysis.model.sequences import PromptBuilder
from app import figures, state


def ranking_note(model: Scorecard, base: Scorecard) -> str:
    """Say plainly where the model loses to the bias baseline (and why), from the numbers shown."""
    lost = [name for name, ours, theirs in (("HR@10", model.hr_at_10, base.hr_at_10),
                                            ("NDCG@10", model.ndcg_at_10, base.ndcg_at_10)) if ours < theirs]
    if not lost:
        return "It is ahead of the bias baseline on every metric shown."
    return (f"It is behind the bias baseline on {' and '.join(lost)}: it only ever sees rated items, so it has "
            "no popularity prior for the unrated candidates a top-10 list ranks. Read the top-10 lists on Compare "
            "with that in mind; AUC (rated items) is where it leads.")

st.title("CURE Explorer")
st.write("How an LLM-based recommender forgets. **CURE** (circuit-aware unlearning for LLM-based recommendation) "
         "finds the circuits behind recommendations, splits their nodes into forget-specific, retain-specific and "
         "task-shared groups, and updates each group by its own rule; this explorer shows whether that beats "
         "updating everything, next to doing nothing and to retraining from scratch.")
st.page_link("app/pages/tour.py", label="New here? Start the guided tour (six steps, each stated from your results)",
             icon=":material/school:")
with state.readable_errors():
    ws = state.workspace()
    s, split = ws.data.summary(), ws.interactions.summary()
    st.subheader("Dataset")
    st.caption(s.source)
    cols = st.columns(4)
    cols[0].metric("Users", f"{s.users:,}")
    cols[1].metric("Items", f"{s.items:,}")
    cols[2].metric("Ratings", f"{s.ratings:,}")
    cols[3].metric("Like rate (rating ≥ 4)", f"{s.like_rate:.1%}")
    st.write(f"Samples with {split.history_length} items of history: {split.train:,} train, "
             f"{split.valid:,} validation, {split.test:,} test.")
    st.plotly_chart(figures.counts(s.genres, "Movies per genre", "movies", "genre"), width="stretch",
                    key="ov_genres")

    rec = state.original()
    base = state.baseline(ws, ws.fingerprint)
    st.subheader("Model")
    cfg, card = rec.model.config, ModelCard.of(rec)
    m, backbone = card.scorecard, card.backbone
    cols = st.columns(4)
    cols[0].metric("Backbone", "GPT-2" if not backbone else Path(backbone).name,
                   help=f"fine-tuned from {backbone}" if backbone else "a GPT-2-shaped model trained from scratch here")
    cols[1].metric("Layers x heads", f"{cfg.num_hidden_layers} x {cfg.num_attention_heads}")
    cols[2].metric("Parameters", f"{card.n_params:,}")
    cols[3].metric("Train seconds", f"{card.train_seconds:.0f}")
    table = pd.DataFrame({"model": astuple(m), "user+item bias baseline": astuple(base)},
                         index=["test AUC", "test ACC", "test LogLoss", "HR@10", "NDCG@10"])  # Scorecard's order
    st.dataframe(table.style.format("{:.4f}"), width="stretch")
    st.caption("From scratch: a GPT-2-shaped model trained on this data here. " + ranking_note(m, base))
    rows = ws.interactions.split("test").head(1)
    sample = rows.iloc[0]
    tokens = PromptBuilder(rec.fmt, ws.interactions).prompts(rows)[0]
    st.caption(f"Example prompt: user {sample['user_id']}'s first test sample, target {ws.title(sample['item_id'])}, "
               f"after the {split.history_length} movies they rated just before it (the prompt this sample is "
               "scored with; Trace shows a user's *latest* history instead, the one recommendations are ranked "
               "after). Token by token, items shown by title; the answer is read after the last token as "
               "logit(Yes) - logit(No):")
    st.code(" | ".join(token_labels(rec, tokens, ws.title)), language=None, wrap_lines=True)
