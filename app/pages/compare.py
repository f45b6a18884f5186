"""Compare: one run before/after, for a forgotten and a retained user; metrics, conflict, Pareto view."""
import pandas as pd
import streamlit as st

from analysis.recommend import rank_changes
from analysis.study.report import pareto_figure
from analysis.unlearn.conflict import ConflictMap
from analysis.unlearn.lab import list_runs
from app import figures, state

st.title("Compare before and after")


def ranking_table(rows: list[dict]) -> pd.DataFrame:
    def change(r):
        if r["change"] is None:
            return "new"
        return f"▲ {r['change']}" if r["change"] > 0 else (f"▼ {-r['change']}" if r["change"] < 0 else "=")
    return pd.DataFrame([{"rank": r["rank"], "movie": r["title"], "before": r["rank_before"], "move": change(r),
                          "P(like)": r["p_like"]} for r in rows])


def colour_moves(value: str) -> str:
    if value.startswith("▲") or value == "new":
        return "color: #2ca02c"
    return "color: #d62728" if value.startswith("▼") else ""


with state.readable_errors():
    ws = state.workspace()
    original = state.original()
    runs = list_runs(ws.root)
    if not runs:
        st.info("No unlearning runs yet: start one in the Unlearning lab.")
        st.stop()
    label = lambda r: (f"{r['method']} · {r['forget']['spec']} · lr {r['config'].get('lr')} · "  # noqa: E731
                       f"{r['config'].get('steps')} steps · {r['run_dir'].split('/')[-1]}")
    run = state.pick_stored("Run", runs, "run_dir", label, "compare_run", "compare_pick")
    forget = ws.forget_set(run["forget"]["spec"], seed=run["forget"]["seed"])
    after = state.saved_model(run["model_dir"])

    forgotten = sorted(forget.users)
    kept = sorted(set(ws.interactions.user_ids) - set(forgotten))[:200]
    c1, c2 = st.columns(2)
    for col, title, users, key in ((c1, "A forgotten user", forgotten, "cmp_fu"), (c2, "A retained user", kept, "cmp_ru")):
        with col:
            st.subheader(title)
            if not users:
                st.caption("none in this request")
                continue
            user = st.selectbox("User", users, key=key)
            table = ranking_table(rank_changes(original, after, ws, int(user)))
            st.dataframe(table.style.map(colour_moves, subset=["move"]).format({"P(like)": "{:.1%}"}),
                         hide_index=True, width="stretch", key=f"{key}_table")
            st.caption("Top-10 after unlearning; 'before' is the rank the original model gave.")

    st.subheader("Metrics")
    names = ["jsd_forget", "jsd_test", "auc_test", "auc_forget", "acc_test", "logloss_test", "mia_auc"]
    st.dataframe(pd.DataFrame({"this run": run["metrics"], "retrain (target)": run["retrain"],
                               "original": run["original"]}).loc[names].style.format("{:.4f}"), width="stretch",
                 key="cmp_metrics")
    st.caption(f"Top-10 kept (share of items): forget users {run['ranking_agreement']['forget_users']}, retained "
               f"users {run['ranking_agreement']['retain_users']}. Run {run['seconds']:.1f} s, retrain "
               f"{run['retrain_seconds']:.0f} s.")

    if run["conflict"]:
        st.subheader("Gradient conflict per module: cos(g_forget, g_retain)")
        cfg = original.model.config
        L, H = cfg.num_hidden_layers, cfg.num_attention_heads
        grids = {w: ConflictMap.from_json(run["conflict"][w]).heatmap(L, H) for w in ("before", "after")}
        cols, rows = [f"h{h}" for h in range(H)] + ["mlp"], [f"layer {l}" for l in range(L)]
        diff = [[(a - b) if a is not None and b is not None else None for a, b in zip(ra, rb)]
                for ra, rb in zip(grids["after"], grids["before"])]
        spread = max([abs(v) for row in diff for v in row if v is not None] + [0.05])  # small changes stay visible
        c1, c2, c3 = st.columns(3)
        for col, (key, title, grid, lo, hi) in zip((c1, c2, c3), (
                ("before", f"before (negative: {run['conflict']['before']['negative_share']:.0%})", grids["before"], -1, 1),
                ("after", f"after (negative: {run['conflict']['after']['negative_share']:.0%})", grids["after"], -1, 1),
                ("diff", "after - before", diff, -spread, spread))):
            col.plotly_chart(figures.heatmap(grid, cols, rows, title, lo, hi), width="stretch", key=f"cmp_{key}")
        st.caption(f"Applied update (forget part vs retain gradient, over updated modules and steps): "
                   f"{run['conflict']['applied']['negative_share']:.1%} conflicting.")

    st.subheader(f"Forgetting vs utility: every run for {run['forget']['spec']}")
    same = [r for r in runs if r["forget"]["spec"] == run["forget"]["spec"]]
    points = [{"method": r["method"], "jsd_forget": r["metrics"]["jsd_forget"], "auc_test": r["metrics"]["auc_test"],
               "label": label(r)} for r in same]
    before = run["original"]  # this run's original model, before unlearning
    st.plotly_chart(pareto_figure(points, "Every run so far; dashed: the Pareto front; star: the original model",
                                  {"jsd_forget": before["jsd_forget"], "auc_test": before["auc_test"]}),
                    width="stretch",
                    key="cmp_pareto")
