"""Compare: one run before/after, for a forgotten and a retained user; metrics, conflict, Pareto view."""
import json
from dataclasses import asdict

import pandas as pd
import streamlit as st

from analysis.recommend import RankChange, rank_changes
from analysis.study.report import distance_pareto_figure
from analysis.unlearn.lab import list_runs
from analysis.unlearn.methods import UnlearningMethod
from app import figures, state

st.title("Compare before and after")
# what the download holds: the run's numbers, not its curves or conflict maps (those are drawn above it)
DOWNLOAD = ("method", "config", "forget", "metrics", "original", "retrain", "yardstick", "ranking_agreement", "seconds",
            "retrain_seconds", "steps_run", "stopped", "per_user")


def ranking_table(rows: list[RankChange]) -> pd.DataFrame:
    """Rank, title, where do nothing had it (with the move), where the retrain has it, P(like): five columns that
    fit half a page (six, with the move apart, pushed the retrain's rank and P(like) out of sight)."""
    def before(r):
        if r.change is None:
            return "new"  # not in do nothing's list (rank_changes: change is None exactly then)
        move = f"▲{r.change}" if r.change > 0 else (f"▼{-r.change}" if r.change < 0 else "=")
        return f"{r.rank_before} {move}"
    return pd.DataFrame([{"rank": r.rank, "movie": r.title, "do nothing": before(r), "retrain": r.rank_retrain,
                          "P(like)": r.p_like} for r in rows])


def colour_moves(value: str) -> str:
    if "▲" in value or value == "new":
        return "color: #2ca02c"
    return "color: #d62728" if "▼" in value else ""


with state.readable_errors():
    ws = state.workspace()
    original = state.original()
    runs = list_runs(ws.root)
    if not runs:
        st.info("No unlearning runs yet: start one in the Unlearning lab.")
        st.stop()
    label = lambda r: (f"{r.method.value} · {r.forget.spec} · lr {r.lr} · {r.steps_run} steps · "  # noqa: E731
                       f"{r.name}")
    run = state.pick_stored("Run", runs, lambda r: r.run_dir, label, state.SessionKey.COMPARE_RUN, "compare_pick")
    forget = ws.forget_set(run.forget.parsed, seed=run.forget.seed)
    after = state.saved_model(run.model_dir)
    retrain = state.saved_model(run.retrain_dir)

    forgotten = sorted(forget.users)
    kept = sorted(set(ws.interactions.seen_user_ids) - set(forgotten))[:200]
    c1, c2 = st.columns(2)
    for col, title, users, key in ((c1, "A forgotten user", forgotten, "cmp_fu"), (c2, "A retained user", kept, "cmp_ru")):
        with col:
            st.subheader(title)
            if not users:
                st.caption("none in this request")
                continue
            user = st.selectbox("User", users, key=key)
            table = ranking_table(rank_changes(original, after, ws, int(user), gold=retrain))
            # narrow number columns, so the retrain's rank and P(like) show without scrolling sideways in a half
            # page; a long title is cut in the cell, and shown whole when the cell is clicked
            narrow = {c: st.column_config.Column(width="small") for c in ("rank", "do nothing", "retrain", "P(like)")}
            st.dataframe(table.style.map(colour_moves, subset=["do nothing"]).format({"P(like)": "{:.0%}"}),
                         hide_index=True, width="stretch", key=f"{key}_table",
                         column_config={**narrow, "movie": st.column_config.TextColumn(width=170)})
            st.caption("Top-10 after unlearning, with the rank the original (do nothing, and the move since) and "
                       "the retrain (gold) give each movie among all unrated ones.")

    st.subheader("Against doing nothing and against retrain")
    y = run.yardstick
    if y:
        fmt = lambda v, f="{:.2f}": "n/a" if v is None else f.format(v)  # noqa: E731
        k1, k2, k3, k4, k5 = st.columns(5)
        k1.metric("Distance to retrain", fmt(y.retrain_distance), help="|forget AUC(run) - forget AUC(retrain)| "
                  "/ |forget AUC(original) - forget AUC(retrain)|: 0 = like the retrain, 1 = as far from it as doing "
                  "nothing, in either direction. Every ranking here uses it with the utility cost.")
        k2.metric("Gap closed (signed)", fmt(y.gap_closed.auc_forget), help="Of the forget-AUC gap: 0 = did "
                  "nothing, 1 = like retrain, > 1 = over-forgetting (past the retrain: itself a membership signal)")
        k3.metric("Utility cost (test AUC lost)", fmt(y.utility_cost, "{:.4f}"))
        k4.metric("JSD ratio to doing nothing", fmt(y.jsd_ratio), help="JSD(run, retrain) / JSD(original, "
                  "retrain) on forget samples; < 1 is closer to retrain than doing nothing")
        attack = run.comparison.attack
        span = lambda b: ("none (a never-seen half has one user)" if None in b  # noqa: E731
                          else f"{b[0]:.3f} to {b[1]:.3f}")
        k5.metric("Matched attack", fmt(attack.auc.run if attack else None, "{:.3f}"),
                  help="0.5 = never seen. AUC of an attacker telling the forgotten users' training samples from "
                       "never-seen users' "
                       "samples at the same place in their time lines; the retrain scores about 0.5 by construction"
                       + (f". Do nothing {attack.auc.original:.3f}, retrain {attack.auc.retrain:.3f}; run's 95% "
                          f"interval over users: {span(attack.interval.run)}" if attack else ""))
        st.caption(f"Original-retrain forget-AUC gap {y.gap.auc_forget:.4f} (95% interval "
                   f"{y.gap.low:.4f} to {y.gap.high:.4f}). {y.note}")
    names = {"auc_forget": "AUC, forget (trained)", "auc_forget_unseen": "AUC, forget (unseen)",
             "logloss_forget": "log-loss, forget (trained)", "logloss_forget_unseen": "log-loss, forget (unseen)",
             "jsd_forget": "JSD to retrain, forget", "auc_test": "AUC, test", "auc_valid": "AUC, validation",
             "jsd_test": "JSD to retrain, test", "acc_test": "accuracy, test",
             "mia_never_seen_auc": "matched attack, train",
             "mia_never_seen_valid_auc": "matched attack, valid", "mia_auc": "old attack"}
    table = pd.DataFrame({"this run": asdict(run.metrics), "original (do nothing)": asdict(run.original),
                          "retrain (gold)": asdict(run.retrain)})
    shown = table.loc[[n for n in names if n in table.index]].astype(float).rename(index=names)
    st.dataframe(shown.style.format("{:.4f}"), width="stretch", key="cmp_metrics")
    st.caption("Forget (trained): the forget samples the objectives push on; forget (unseen): the forgotten users' "
               "(or genre's) validation and test samples, never trained on: does forgetting reach beyond the trained "
               "samples? Matched attack: 0.5 = like a user no model saw; the old attack (forget vs test samples) is "
               "confounded by time. The download below keeps the code names.")
    per_user = run.comparison.per_user
    if per_user:
        st.subheader("How recognisable is each forgotten user?")
        st.plotly_chart(figures.recognisability(per_user), width="stretch", key="cmp_per_user")
        top = sorted(per_user, key=lambda r: -r.after)[:10]
        st.dataframe(pd.DataFrame([{"user": r.user, "after": r.after, "before (do nothing)": r.before,
                                    "retrain": r.retrain} for r in top]).style.format(
                         {"after": "{:.0%}", "before (do nothing)": "{:.0%}", "retrain": "{:.0%}"}),
                     hide_index=True, width="stretch", key="cmp_top_users")
        st.caption("Per forgotten user: the share of never-seen users whose mean attack score they exceed (50% = a "
                   "typical never-seen user). The table: the 10 most recognisable after this run.")
    stored = run.to_json()
    full = {k: stored[k] for k in DOWNLOAD}
    st.download_button("Download this run's numbers (full precision, JSON)", json.dumps(full, indent=1, default=str),
                       file_name=f"run-{run.name}.json", mime="application/json",
                       key="cmp_download")
    # a study's runs store none (their cells skip rankings): computed here, for this run only
    agree = run.comparison.ranking_agreement or state.ranking_agreement(run.run_dir, after, original, forget)
    show = lambda v: "n/a" if v is None else f"{v:.0%}"  # noqa: E731
    stopped = run.stopped.reason if run.stopped else "budget"
    st.caption(f"Top-10 kept (share of items): forget users {show(agree.forget_users)}, retained users "
               f"{show(agree.retain_users)}. Run {run.seconds:.1f} s ({run.steps_run} of {run.steps_budget} steps; "
               f"{stopped}), retrain {run.retrain_seconds:.0f} s.")

    if run.conflict:
        st.subheader("Gradient conflict per module: cos(g_forget, g_retain)")
        cfg = original.model.config
        L, H = cfg.num_hidden_layers, cfg.num_attention_heads
        grids = {"before": run.conflict.before.heatmap(L, H), "after": run.conflict.after.heatmap(L, H)}
        cols, rows = [f"h{h}" for h in range(H)] + ["mlp"], [f"layer {l}" for l in range(L)]
        diff = [[(a - b) if a is not None and b is not None else None for a, b in zip(ra, rb)]
                for ra, rb in zip(grids["after"], grids["before"])]
        spread = max([abs(v) for row in diff for v in row if v is not None] + [0.05])  # small changes stay visible
        c1, c2, c3 = st.columns(3)
        # a title counts the cells it sits on; the share over every node (rows, roles too) goes in the caption
        negative = lambda grid: (f"{sum(v < 0 for row in grid for v in row if v is not None)} of "  # noqa: E731
                                 f"{sum(v is not None for row in grid for v in row)} cells negative")
        for col, (key, title, grid, lo, hi) in zip((c1, c2, c3), (
                ("before", f"before: {negative(grids['before'])}", grids["before"], -1, 1),
                ("after", f"after: {negative(grids['after'])}", grids["after"], -1, 1),
                ("diff", "after - before", diff, -spread, spread))):
            col.plotly_chart(figures.heatmap(grid, cols, rows, title, lo, hi), width="stretch", key=f"cmp_{key}")
        before, after = run.conflict.before, run.conflict.after
        st.caption(f"Over all nodes both gradients reach (of {len(before.cos)}: heads, MLPs, input roles and item "
                   f"rows, not only the cells above): {before.negative_share:.0%} conflicting before, "
                   f"{after.negative_share:.0%} after.")
        upd = run.conflict.applied_update
        st.caption(f"The rule's forget part vs the retain gradient, over updated nodes and steps: "
                   f"{run.conflict.applied.negative_share:.1%} conflicting"
                   + (f"; the parameter change actually applied (after the optimiser's rescaling) vs the retain "
                      f"gradient: {upd.negative_share:.1%} conflicting." if upd else "."))

    st.subheader(f"Forgetting vs utility: every run for {run.forget.spec}")
    same = [r for r in runs if r.forget.spec == run.forget.spec]
    points = [{"method": r.method.value, "gap_closed": r.yardstick.gap_closed.auc_forget,
               "retrain_distance": r.yardstick.retrain_distance, "auc_test": r.metrics.auc_test, "label": label(r)}
              for r in same if r.method is not UnlearningMethod.RETRAIN]
    # the retrain's spread over the deletion draws of this request kind, where more than one draw was run
    draws = {r.forget.seed: r.retrain.auc_test for r in same}
    band = (min(draws.values()), max(draws.values())) if len(draws) > 1 else None
    st.plotly_chart(distance_pareto_figure(points, run.original.auc_test, run.retrain.auc_test,
                                           "Every run so far; dashed: the Pareto front; star: do nothing; diamond: "
                                           "retrain (the ideal point)"
                                      + ("; band: retrain over deletion draws" if band else ""), band),
                    width="stretch", key="cmp_pareto")
