"""The study's self-contained report: interactive plotly figures in one HTML file, plus CSV and JSON.

Figures are built here (plotly, no streamlit) so the CLI report and the app's Evidence
page draw the same pictures from the same numbers.
"""
from __future__ import annotations

import csv
import html
import json
import os
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..cache import build_or_load, config_key, write_json_atomic
from ..circuits.discover import model_identity
from ..config import CODE_VERSION
from ..model.recommender import Recommender
from ..pareto import pareto_front
from ..workspace import Workspace
from .result import REPORTS, Row, StudyResult
from .tables import ABLATION_COLUMNS, ABLATION_NOTE, NO_NOISE, NOISE_NOTE, ablation_rows, noise_rows

REPORT_VERSION = 13  # bump when the report's content changes (its cells stay cached)
JSD_FLOOR = 1e-5  # retrain's JSD to itself is 0; a log axis needs a floor


def pareto_figure(points: list[dict], title: str = "Forgetting vs utility", original: dict | None = None) -> go.Figure:
    """Points with method, jsd_forget, auc_test (optional *_std and label); the Pareto front dashed.

    `original` ({jsd_forget, auc_test} of the model before unlearning) is drawn as a reference
    star outside the front: a method sitting on it has changed nothing that these axes see.
    """
    fig = go.Figure()
    for method in sorted({p["method"] for p in points}):
        mine = [p for p in points if p["method"] == method]
        fig.add_trace(go.Scatter(
            x=[max(p["jsd_forget"], JSD_FLOOR) for p in mine], y=[p["auc_test"] for p in mine], mode="markers",
            name=method, marker={"size": 11}, text=[p.get("label", method) for p in mine],
            error_x={"array": [p.get("jsd_forget_std", 0) for p in mine]},
            error_y={"array": [p.get("auc_test_std", 0) for p in mine]},
            hovertemplate="%{text}<br>JSD forget %{x:.4f}<br>test AUC %{y:.4f}<extra></extra>"))
    front = sorted((points[i] for i in pareto_front([(p["jsd_forget"], p["auc_test"]) for p in points])),
                   key=lambda p: p["jsd_forget"])
    if front:
        fig.add_trace(go.Scatter(x=[max(p["jsd_forget"], JSD_FLOOR) for p in front], y=[p["auc_test"] for p in front],
                                 mode="lines", name="Pareto front", line={"dash": "dash", "color": "black"}))
    if original is not None:
        fig.add_trace(go.Scatter(x=[max(original["jsd_forget"], JSD_FLOOR)], y=[original["auc_test"]], mode="markers",
                                 name="original (do nothing)", marker={"symbol": "star", "size": 16, "color": "black"},
                                 hovertemplate="original model<br>JSD forget %{x:.4f}<br>test AUC %{y:.4f}"
                                               "<extra></extra>"))
    fig.update_layout(title=title, height=420, xaxis={"title": "JSD to retrain on forget samples (lower = closer)",
                                                      "type": "log"}, yaxis={"title": "test AUC"})
    return fig


def distance_pareto_figure(points: list[dict], original_auc: float, retrain_auc: float | None,
                           title: str = "Distance to retrain vs utility",
                           retrain_band: tuple[float, float] | None = None) -> go.Figure:
    """x: retrain distance (0 = the retrain, the ideal point; 1 = as far from it as doing nothing, either way),
    y: test AUC. Signed gap closed is in the hover. The original (1, its AUC) and the retrain (0, its AUC) take
    part in the front; a run that overshoots the retrain sits right of one that lands on it, so over-forgetting
    never draws the front. `retrain_band`: the retrain's test AUC range over deletion draws: a run inside it
    costs no more utility than retraining does."""
    fig = go.Figure()
    if retrain_band is not None:
        fig.add_hrect(y0=retrain_band[0], y1=retrain_band[1], fillcolor="grey", opacity=0.15, line_width=0,
                      annotation_text="retrain over deletion draws", annotation_position="top left")
    usable = [p for p in points if p.get("retrain_distance") is not None]
    for method in sorted({p["method"] for p in usable}):
        mine = [p for p in usable if p["method"] == method]
        signed = ["n/a" if p.get("gap_closed") is None else f"{p['gap_closed']:.2f}" for p in mine]
        fig.add_trace(go.Scatter(
            x=[p["retrain_distance"] for p in mine], y=[p["auc_test"] for p in mine], mode="markers", name=method,
            marker={"size": 11}, customdata=[[p.get("label", method), g] for p, g in zip(mine, signed)],
            error_x={"array": [p.get("retrain_distance_std", 0) for p in mine]},
            error_y={"array": [p.get("auc_test_std", 0) for p in mine]},
            hovertemplate="%{customdata[0]}<br>retrain distance %{x:.2f}<br>gap closed (signed) %{customdata[1]}"
                          "<br>test AUC %{y:.4f}<extra></extra>"))
    anchors = [{"method": "original (do nothing)", "retrain_distance": 1.0, "auc_test": original_auc}]
    if retrain_auc is not None:
        anchors.append({"method": "retrain (gold, the ideal point)", "retrain_distance": 0.0, "auc_test": retrain_auc})
    for a, symbol in zip(anchors, ("star", "diamond")):
        fig.add_trace(go.Scatter(x=[a["retrain_distance"]], y=[a["auc_test"]], mode="markers", name=a["method"],
                                 marker={"symbol": symbol, "size": 16, "color": "black"},
                                 hovertemplate=f"{a['method']}<br>test AUC %{{y:.4f}}<extra></extra>"))
    every = usable + anchors
    front = sorted((every[i] for i in pareto_front([(p["retrain_distance"], p["auc_test"]) for p in every])),
                   key=lambda p: p["retrain_distance"])
    fig.add_trace(go.Scatter(x=[p["retrain_distance"] for p in front], y=[p["auc_test"] for p in front],
                             mode="lines", name="Pareto front", line={"dash": "dash", "color": "black"}))
    ys = [p["auc_test"] for p in every] + (list(retrain_band) if retrain_band else [])
    mid, half = (max(ys) + min(ys)) / 2, max((max(ys) - min(ys)) / 2 * 1.2, 0.01)  # never narrower than ±0.01
    fig.update_layout(title=title, height=420,
                      xaxis={"title": "distance to retrain (0 = retrain, 1 = as far as doing nothing, either way)",
                             "rangemode": "tozero"},
                      yaxis={"title": "test AUC", "range": [mid - half, mid + half]})
    return fig


def metric_lines(summary: list[dict], x_key: str, metrics: tuple[str, ...], title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    colours = {}
    for col, metric in enumerate(metrics, start=1):
        for method in sorted({s["method"] for s in summary}):
            mine = [s for s in summary if s["method"] == method]
            colours.setdefault(method, len(colours))
            fig.add_trace(go.Scatter(x=[s[x_key] for s in mine], y=[s[metric] for s in mine], name=method,
                                     error_y={"array": [s.get(f"{metric}_std", 0) for s in mine]},
                                     mode="lines+markers", legendgroup=method, showlegend=col == 1,
                                     marker={"color": f"hsl({60 * colours[method]}, 60%, 45%)"}), row=1, col=col)
    fig.update_layout(title=title, height=380)
    return fig


def jaccard_figure(stability: dict[str, float | None] | None, title: str) -> go.Figure:
    """A bar per group; a group empty on every seed gets no bar and says "empty" (not Jaccard 1.0)."""
    stability = stability or {}
    fig = go.Figure(go.Bar(x=list(stability), y=[v for v in stability.values()],
                           text=["empty" if v is None else f"{v:.2f}" for v in stability.values()],
                           textposition="outside"))
    fig.update_layout(title=title, height=320, yaxis={"range": [0, 1], "title": "mean pairwise Jaccard"})
    return fig


def privacy_figure(summary: list[dict]) -> go.Figure:
    labels = [f"{s['method']} lr {s['lr']}" for s in summary]
    fig = go.Figure(go.Bar(x=labels, y=[s["mia_auc"] for s in summary],
                           error_y={"array": [s.get("mia_auc_std", 0) for s in summary]}, name="MIA AUC"))
    ref = [s["retrain_mia_auc"] for s in summary if s.get("retrain_mia_auc") is not None]
    if ref:
        fig.add_hline(y=sum(ref) / len(ref), line_dash="dash", annotation_text="retrain")
    fig.update_layout(title="Membership inference AUC (forget vs unseen samples)", height=360)
    return fig


def _original_point(summary: list[dict]) -> dict | None:
    """The model before unlearning, from any summary that carries it (older reports do not)."""
    found = next((s for s in summary if s.get("original_auc_test") is not None), None)
    return None if found is None else {"jsd_forget": found["original_jsd_forget"], "auc_test": found["original_auc_test"]}


def _pareto(result: StudyResult) -> go.Figure:
    """Retrain distance vs test AUC (do nothing and retrain drawn as points); older reports: JSD vs test AUC."""
    summary = result.pareto
    title = f"Pareto: every method at lr {', '.join(str(x) for x in result.config['lrs'])}"
    runs = [{**s, "label": f"{s['method']} lr {s['lr']}"} for s in summary if s["method"] != "retrain"]
    retrain = next((s for s in summary if s["method"] == "retrain"), None)
    original = _original_point(summary)
    if original is not None and any(s.get("retrain_distance") is not None for s in runs):
        band = None
        if retrain and retrain.get("auc_test_std"):  # the retrain's spread over the deletion draws, +- 1 std
            band = (retrain["auc_test"] - retrain["auc_test_std"], retrain["auc_test"] + retrain["auc_test_std"])
        return distance_pareto_figure(runs, original["auc_test"], retrain["auc_test"] if retrain else None, title, band)
    return pareto_figure(runs, title, original)


def figures(result: StudyResult) -> dict[str, go.Figure]:
    seeds = result.reproducibility.prompt_seeds
    return {
        "pareto": _pareto(result),
        "rates": metric_lines(result.rates, "request", ("jsd_forget", "auc_test", "mia_auc"),
                              "Deletion rates (user level)"),
        "levels": metric_lines(result.levels, "request", ("jsd_forget", "auc_test", "mia_auc"),
                               "Levels: user, interaction, behaviour"),
        "reproducibility": jaccard_figure(seeds[0] if seeds else None,
                                          "Group stability over circuit prompt seeds (first deletion draw)"),
        "privacy": privacy_figure(result.pareto),
    }


def _versions() -> dict:
    names = ("torch", "transformers", "transformer-lens", "streamlit", "plotly", "networkx", "numpy", "pandas")
    out = {"python": platform.python_version(), "cure-explorer code": CODE_VERSION}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def _table(rows: list[dict], keys: list[str]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def split_rows(result: StudyResult) -> list[Row]:
    """The same request's groups per node kind on this dataset and on the transfer dataset, draw by draw."""
    across = result.transfer.get("across_datasets")
    if across is None or across.sizes_here is None:
        return []
    name = result.transfer_dataset.name if result.transfer_dataset else "other dataset"
    rows = []
    for draw, (here, there) in enumerate(zip(across.sizes_here, across.sizes_there)):
        for kind in sorted(set(here) | set(there or {})):
            for where, sizes in (("this dataset", here), (name, there or {})):
                rows.append({"draw": draw, "node kind": kind, "dataset": where, **sizes.get(kind, {})})
    return rows


def _split_by_kind(result: StudyResult) -> str:
    rows = split_rows(result)
    if not rows:
        return ""
    note = result.transfer["across_datasets"].item_rows
    return ("<h3>The same request on both datasets, per node kind</h3><p>Roles, heads and MLPs exist on both and "
            f"are what transfers; item rows: {html.escape(note)}.</p>"
            + _table(rows, ["draw", "node kind", "dataset", "forget-specific", "retain-specific", "task-shared",
                            "inactive"]))


def transfer_rows(result: StudyResult) -> list[Row]:
    """The transfer table: one row per transfer kind and per groups' origin (own vs transferred), or why it was
    skipped."""
    rows = []
    for kind, t in result.transfer.items():
        name = kind.replace("_", " ")
        if t.skipped is not None:
            rows.append({"groups from": name, "cure with": f"skipped: {t.skipped}"})
            continue
        for which, summary in (("own", t.cure_with_own_groups), ("transferred", t.cure_with_transferred_groups)):
            rows.append({"groups from": f"{name}: {', '.join(t.groups_from)}", "same groups": t.same_groups,
                         "cure with": f"{which} groups", **(summary or {})})
        back = t.back
        if back:  # the reverse direction: CURE on the other dataset, with its own groups and with ours
            for which, summary in (("own", back.cure_with_own_groups), ("transferred", back.cure_with_transferred_groups)):
                rows.append({"groups from": f"reverse, on {back.on}: {back.groups_from}",
                             "cure with": f"{which} groups", **(summary or {})})
    return rows


def _utility_spread(pareto: list[Row]) -> str:
    """Whether test AUC separates the methods at all: their range next to retrain's own spread over draws."""
    kept = [s["auc_test"] for s in pareto if s["method"] not in ("retrain", "ga")]
    retrain = next((s for s in pareto if s["method"] == "retrain"), None)
    if not kept or retrain is None:
        return ""
    return (f"Test AUC of every method but GA and retrain spans {min(kept):.4f}-{max(kept):.4f} "
            f"({max(kept) - min(kept):.4f}); retrain's own spread over draws is ±{retrain['auc_test_std']:.4f}, "
            "so a utility gap smaller than that is not evidence.")


def _ablation_html(result: StudyResult) -> str:
    arms, diffs = ablation_rows(result)
    if not arms:
        return ""
    return (f"<h2>Ablation: does the rule matter, and does the circuit?</h2><p>{ABLATION_NOTE}</p>"
            + _table(arms, ABLATION_COLUMNS)
            + _table(diffs, ["comparison", "retrain_distance", "utility_cost", "mia_never_seen_auc"]))


def _noise_html(result: StudyResult) -> str:
    draws, methods = noise_rows(result)
    if not draws:
        return f"<h2>Training-seed noise</h2><p>{NO_NOISE}</p>"
    return (f"<h2>Training-seed noise</h2><p>{NOISE_NOTE} Seeds: "
            f"{', '.join(map(str, result.training_noise.seeds))}.</p>" + _table(draws, list(draws[0]))
            + "<p>The compared methods at the rule's strengths over every (deletion draw, training seed) pair:</p>"
            + _table(methods, ["method", "lr", "pairs", "retrain_distance", "gap_closed", "utility_cost",
                               "matched attack"]))


def render_html(result: StudyResult, meta: dict) -> str:
    figs = figures(result)
    parts = [f"<h1>CURE Explorer study</h1><p>{html.escape(meta['title'])}</p>",
             "<h2>Reproduce</h2><pre>" + html.escape(json.dumps(meta, indent=1)) + "</pre>"]
    first = True
    notes = {
        "pareto": "Each point: mean over deletion draws (error bars: standard deviation); x: forget-AUC gap closed "
                  "(0 = do nothing, 1 = retrain). Dashed: the Pareto front, which do nothing and retrain take part in. "
                  "Every strength ran on the first deletion draw, where the retrain-free rule picks one per method; "
                  "the other draws ran the pick and the default lr, so other strengths are one draw (n_seeds). "
                  + _utility_spread(result.pareto),
        "rates": f"CURE and the two strongest baselines ({', '.join(result.compared_methods[1:])}) at lr "
                 f"{result.default_lr}.",
        "levels": "The same three methods on a user-level, an interaction-level and a behaviour-level request.",
        "reproducibility": "A group empty on both seeds is marked empty, not counted as agreement. Group sizes "
                           "and the effect of groups from another circuit seed are in the table below.",
        "privacy": "Dashed: the retrained model's MIA AUC, the value an unlearned model should match.",
    }
    for name, fig in figs.items():
        parts.append(f"<h2>{name.capitalize()}</h2><p>{html.escape(notes[name])}</p>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if first else False))
        first = False
    rep = result.reproducibility
    parts.append("<h3>Groups from another circuit seed</h3><pre>"
                 + html.escape(json.dumps({"group sizes": rep.group_sizes, "deletion draws": rep.deletion_draws,
                                           **asdict(rep.other_seed)}, indent=1, default=str)) + "</pre>")
    parts.append(_ablation_html(result))
    parts.append(_noise_html(result))
    parts.append("<h2>Transfer</h2><p>CURE on each deletion draw with groups found elsewhere: on the next draw, "
                 "and on a same-recipe model of a second dataset when one was given.</p>")
    parts.append(_table(transfer_rows(result), ["groups from", "same groups", "cure with", "jsd_forget",
                                                "jsd_forget_std", "auc_test", "auc_forget", "mia_auc", "n_seeds"]))
    parts.append(_split_by_kind(result))
    relative = ["retrain_distance", "retrain_distance_std", "gap_closed", "gap_closed_std", "jsd_ratio",
                "jsd_ratio_std", "utility_cost", "utility_cost_std", "valid_drop"]
    if result.headline:
        parts.append("<h2>Headline: each method at the strength the retrain-free rule chose</h2><p>The weakest lr "
                     "whose forgotten users are indistinguishable from never-seen users on validation-period samples "
                     "(matched attack; neither the retrain nor the test set is read). Retrain distance: 0 = the "
                     "retrain, 1 = as far from it as doing nothing, in either direction (the ranking); gap closed, "
                     "signed: &gt; 1 = over-forgetting; utility cost: test AUC lost; matched attack: forgotten vs "
                     "never-seen users' training-period samples (0.5 = never seen).</p>"
                     + _table(result.headline, ["method", "lr", "n_seeds", *relative, "mia_never_seen_auc",
                                                   "retrain_mia_never_seen_auc", "original_mia_never_seen_auc",
                                                   "mia_never_seen_valid_auc", "auc_forget_unseen", "auc_test",
                                                   "original_auc_test", "seconds", "chosen_by"]))
    keys = ["method", "lr", "n_seeds", *relative, "jsd_forget", "jsd_forget_std", "jsd_test", "auc_test", "auc_test_std",
            "auc_forget", "mia_auc", "mia_auc_std", "retrain_mia_auc", "retrain_auc_test", "original_jsd_forget",
            "original_auc_forget", "original_mia_auc", "original_auc_test", "seconds"]
    parts.append("<h2>Pareto table</h2>" + _table(result.pareto, keys))
    parts.append("<h2>Rates and levels</h2>" + _table(result.rates + result.levels, ["request", *keys]))
    style = "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}</style>"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>CURE study</title>{style}</head>" \
           f"<body>{''.join(parts)}</body></html>"


def report_key(ws: Workspace, original: Recommender, result: StudyResult) -> str:
    other = None if result.transfer_dataset is None else asdict(result.transfer_dataset)
    return config_key({**ws.key_core(model_identity(original)), "report": REPORT_VERSION, "study": result.config,
                       "transfer_dataset": other})


def write_report(ws: Workspace, original: Recommender, result: StudyResult, wall_seconds: float) -> Path:
    rows, other = result.rows, result.transfer_dataset
    meta = {"title": f"{ws.data.name}, model {original.path}", "config": result.config, "seeds": result.seeds,
            "versions": _versions(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
            "wall_seconds": wall_seconds,
            # a resumed study's wall time is short; what its unlearning steps and retrains cost when computed
            # (circuit discovery and evaluation come on top)
            "unlearning_and_retrain_seconds": sum(r["seconds"] for r in rows if r["method"] != "retrain")
            + sum({(r["section"] == "transfer_back", r["request"], r["seed"]): r["retrain_seconds"]  # one retrain
                   for r in rows}.values()),  # per dataset, request and draw
            "command": "cure study" + ("" if len(result.seeds) > 1 else " --quick")
            + (f" --transfer-data {other.name}" if other else ""),
            "transfer_dataset": None if other is None else asdict(other)}

    def build(tmp: Path) -> None:
        (tmp / "report.html").write_text(render_html(result, meta))
        write_json_atomic(tmp / "study.json", {**result.to_json(), "meta": meta})
        keys = sorted({k for r in rows for k in r})
        with open(tmp / "table.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    return build_or_load(ws.root, REPORTS, report_key(ws, original, result), build)
