"""Overview: the dataset card, the model card and one example prompt, token by token."""
import pandas as pd
import streamlit as st

from analysis.model.sequences import PromptBuilder
from app import state

st.title("CURE Explorer")
st.write("How an LLM-based recommender forgets: its circuits, selective unlearning, and what changes.")
with state.readable_errors():
    ws = state.workspace()
    s, split = ws.data.summary(), ws.interactions.summary()
    st.subheader("Dataset")
    st.caption(s["source"])
    cols = st.columns(4)
    cols[0].metric("Users", f"{s['users']:,}")
    cols[1].metric("Items", f"{s['items']:,}")
    cols[2].metric("Ratings", f"{s['ratings']:,}")
    cols[3].metric("Like rate (rating > 3)", f"{s['like_rate']:.1%}")
    st.write(f"Samples with {split['history_length']} items of history: {split['samples']['train']:,} train, "
             f"{split['samples']['valid']:,} validation, {split['samples']['test']:,} test.")
    st.bar_chart(pd.Series(s["genres"], name="movies").sort_values(ascending=False), horizontal=True)

    rec = state.original()
    base = state.baseline(ws, ws.fingerprint)
    st.subheader("Model")
    cfg, m = rec.model.config, rec.meta["metrics"]
    cols = st.columns(4)
    cols[0].metric("Backbone", rec.meta.get("backbone") or "GPT-2 (from scratch)")
    cols[1].metric("Layers x heads", f"{cfg.num_hidden_layers} x {cfg.num_attention_heads}")
    cols[2].metric("Parameters", f"{rec.meta['n_params']:,}")
    cols[3].metric("Train seconds", f"{rec.meta['training']['train_seconds']:.0f}")
    table = pd.DataFrame({
        "model": [m["test"]["auc"], m["test"]["acc"], m["test"]["logloss"], m["ranking"]["hr@10"], m["ranking"]["ndcg@10"]],
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
