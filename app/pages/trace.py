"""Trace: one user and one candidate item; the score split by module, and attention over the prompt."""
import streamlit as st

from analysis.circuits.trace import token_labels, trace_one
from analysis.metrics import sigmoid
from analysis.recommend import candidate_prompt
from app import figures, state

st.title("Trace one recommendation")
st.write("Pick a user and a candidate movie. The score is logit(Yes) - logit(No) after the last token; below, "
         "how much each attention head and MLP writes *directly* toward that score, and where any head looks.")
with state.readable_errors():
    ws = state.workspace()
    rec = state.original()
    users = sorted(ws.interactions.user_ids)
    c1, c2 = st.columns(2)
    user = c1.selectbox("User", users, index=0, key="trace_user")
    items = sorted(ws.interactions.item_ids)
    test = ws.interactions.split("test")
    default = test.loc[test["user_id"] == user, "item_id"]
    first = items.index(int(default.iloc[0])) if len(default) else 0
    item = c2.selectbox("Candidate movie", items, index=first, format_func=lambda i: f"{ws.title(i)} ({i})",
                        key="trace_item")
    prompt = candidate_prompt(rec, ws, int(user), int(item))
    traced = trace_one(state.bridge(rec), rec, prompt)
    labels = token_labels(rec, traced.tokens, ws.title)
    m1, m2 = st.columns(2)
    m1.metric("Score (logit Yes - No)", f"{traced.score:+.3f}")
    m2.metric("P(like)", f"{float(sigmoid(traced.score)):.1%}")
    with st.expander("Prompt tokens: the user's latest history, then the candidate"):
        st.caption("The prompt recommendations are ranked with: the user's most recent rated movies, whichever movie "
                   "is the candidate. Overview's example is a test sample's own prompt (the movies rated just before "
                   "that rating), so the same user and movie can start differently there.")
        st.code(" | ".join(labels), language=None)
    modules = {k: v for k, v in traced.direct.items() if k not in ("input",)}
    st.plotly_chart(figures.bars(modules, "Direct contribution to the score, by module (input embedding: "
                                 f"{traced.direct['input']:+.3f})"), width="stretch", key="trace_direct")
    n_layers, n_heads = traced.patterns.shape[:2]
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", list(range(n_layers)), key="trace_layer")
    head = c2.selectbox("Head", list(range(n_heads)), key="trace_head")
    st.plotly_chart(figures.attention_figure(traced.patterns[layer, head].numpy(), labels,
                                             f"Attention of a{layer}.h{head} (rows: query token, columns: key token)"),
                    width="stretch", key="trace_attention")
