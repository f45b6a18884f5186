"""The guided tour's steps, each stated from the current request's own results.

A tour that tells a class what the screen does not show teaches the wrong thing (on main it
said the groups were "stable" when two were empty, and to "watch the losses fall" while
they wandered). So every claim here is formatted from `TourFacts`, gathered from the cached
results of this session's request, and `tests/test_tour.py` checks each step's text
against the facts it describes. Nothing here computes a model: it reads what is stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .circuits.describe import describe
from .circuits.discover import CircuitSettings, cached_circuits
from .circuits.groups import GroupThresholds
from .data.forget import ForgetSpec
from .model.evaluate import ModelCard, Scorecard
from .progress import TIMINGS, measured_seconds, typical_seconds
from .unlearn.methods import UnlearningMethod
from .unlearn.record import RunRecord

TREND_WINDOW = 5  # steps averaged at each end of a loss curve (one batch is noisy)


@dataclass(frozen=True)
class RunFacts:
    method: str
    steps: int
    gap_closed: float | None  # forget AUC, signed: 0 = do nothing, 1 = retrain, > 1 over-forgetting
    utility_cost: float
    forget_loss: tuple[float, float]  # mean of the first and last TREND_WINDOW steps
    retain_loss: tuple[float, float]
    retrain_distance: float | None = None  # 0 = the retrain, 1 = as far as doing nothing, either way
    forget_ends: tuple[float, float] | None = None  # the first and last points the lab's chart draws


@dataclass(frozen=True)
class TourFacts:
    request: str
    model_auc: float
    bias_auc: float
    model_hr: float
    bias_hr: float
    groups: dict[str, int] | None  # None: the request's circuits are not computed yet
    stability: dict[str, float | None] | None  # per group Jaccard over seeds (None: empty on every seed)
    forget_item_rows: int = 0
    picked: tuple[str, ...] = ()
    run: RunFacts | None = None  # the newest CURE run of the request
    n_studies: int = 0
    circuits_seconds: float = 0.0  # a first discovery, measured on this machine when it has been
    cure_seconds: float = 0.0
    group_sentences: tuple[str, ...] = ()  # per group, what it holds (analysis.circuits.describe)
    study_seconds: float | None = None  # a quick study's measured time here (None: none has finished here)


@dataclass(frozen=True)
class TourStep:
    page: str
    title: str
    text: str
    claims: dict = field(default_factory=dict)  # the numbers the text states


def _minutes(s: float) -> str:
    return f"about {s:.0f} s" if s < 90 else f"about {s / 60:.0f} min"


def run_facts(run: RunRecord) -> RunFacts:
    curves = run.curves
    f = [c["forget_bce"] for c in curves] or [float("nan")]
    r = [c["retain_bce"] for c in curves] or [float("nan")]
    w = TREND_WINDOW
    y = run.yardstick
    return RunFacts(run.method.value, int(run.steps_run or len(curves)), y.gap_closed.auc_forget,
                    float(y.utility_cost),
                    (float(np.mean(f[:w])), float(np.mean(f[-w:]))), (float(np.mean(r[:w])), float(np.mean(r[-w:]))),
                    y.retrain_distance, (float(f[0]), float(f[-1])) if curves else None)


def _overview(f: TourFacts) -> TourStep:
    auc = "beats" if f.model_auc > f.bias_auc else "does not beat"
    hr = "beats" if f.model_hr > f.bias_hr else "does not beat"
    text = (f"A small GPT-2 reads a user's attributes and last rated movies and answers Yes/No for a candidate movie. "
            f"On test AUC it {auc} a user+item bias baseline ({f.model_auc:.3f} vs {f.bias_auc:.3f}); on HR@10, "
            f"ranking unrated candidates, it {hr} it ({f.model_hr:.3f} vs {f.bias_hr:.3f}).")
    if f.model_hr <= f.bias_hr:
        text += (" It only ever sees rated items, so it has no popularity prior for unrated ones: ranking is its "
                 "weak spot, and the top-10 lists on Compare should be read with that in mind.")
    return TourStep("app/pages/overview.py", "1. The recommender", text,
                    {"model_auc": f.model_auc, "bias_auc": f.bias_auc, "model_hr": f.model_hr, "bias_hr": f.bias_hr})


def _trace(f: TourFacts) -> TourStep:
    return TourStep("app/pages/trace.py", "2. One recommendation, opened up",
                    "Pick a user and a movie. The bars show which heads and MLPs push the answer toward Yes (up) or "
                    "No (down); the heatmap shows which earlier movies (by title) a head attends to when it answers.")


def _circuits(f: TourFacts) -> TourStep:
    text = (f"For '{f.request}', every embedding role, head, MLP and item-embedding row is scored on forget and on "
            f"retain prompts; a node is forget-specific only when its importance ratio is significantly above tau "
            f"(false discoveries controlled over every node tested). ")
    claims: dict = {"computed": f.groups is not None}
    if f.groups is None:
        text += (f"This request's circuits are not computed yet: the first discovery takes "
                 f"{_minutes(f.circuits_seconds)} on this machine, then it is cached.")
        return TourStep("app/pages/circuits.py", "3. Circuits of a deletion request", text, claims)
    g = f.groups
    claims.update(g)
    text += (f"On this request: {g['forget-specific']} forget-specific ({f.forget_item_rows} of them item rows), "
             f"{g['retain-specific']} retain-specific, {g['task-shared']} task-shared, {g['inactive']} inactive.")
    # what the forget-specific group is (or why it is empty), not only how many: read off the data
    forget_sentence = next((s for s in f.group_sentences if s.startswith("forget-specific:")), None)
    if forget_sentence:
        text += f" In detail, {forget_sentence}"
        claims["summary"] = forget_sentence
    empty = [name for name, n in g.items() if n == 0]
    if empty:
        text += f" Empty here: {', '.join(empty)}; CURE has nothing to apply those groups' rules to."
    if f.stability is not None:
        measured = {k: v for k, v in f.stability.items() if v is not None}
        claims["stability"] = measured
        if measured:
            text += " Across prompt seeds, the groups' members overlap (Jaccard) " + ", ".join(
                f"{k} {v:.2f}" for k, v in measured.items()) + "."
        never = [k for k, v in f.stability.items() if v is None]
        if never:
            text += f" Empty on every seed (no overlap to measure): {', '.join(never)}."
    text += " Click a node on the graph (or lasso several from its toolbar), or pick item rows by title: the lab's `selective` method updates only those."
    return TourStep("app/pages/circuits.py", "3. Circuits of a deletion request", text, claims)


def _lab(f: TourFacts) -> TourStep:
    picked = (f"You have picked {len(f.picked)} node(s) ({', '.join(f.picked[:4])}{'...' if len(f.picked) > 4 else ''}): "
              f"choose `selective` to update only those." if f.picked else
              "Nothing is picked yet: click nodes on the Circuits graph to try `selective` on them.")
    text = (f"Run CURE (each group updated by its own rule), `selective`, or a baseline that updates everything; the "
            f"retrained model, the gold standard, is trained alongside (a first CURE run of this request takes "
            f"{_minutes(f.cure_seconds)} here, from this machine's measured costs of what is not cached yet). "
            f"{picked}")
    claims: dict = {"picked": len(f.picked)}
    if f.run is not None:
        (f0, f1), (r0, r1) = f.run.forget_loss, f.run.retain_loss
        moved = "rose" if f1 > f0 else "fell"
        # the chart's own end points first (what a reader sees), then the averages the trend word is read from:
        # one batch is noisy, and end points alone once read 0.601 -> 0.575 where the averages rose
        trend = (f"the forget loss {moved} from {f0:.3f} to {f1:.3f} over {f.run.steps} steps (unlearning pushes it "
                 f"up) while the retain loss went from {r0:.3f} to {r1:.3f}")
        if f.run.forget_ends is None:
            text += f" In the last {f.run.method} run here, {trend}."
        else:
            a, b = f.run.forget_ends
            text += (f" In the last {f.run.method} run here, the lab's chart drew the forget loss from {a:.3f} at step "
                     f"1 to {b:.3f} at step {f.run.steps}; one batch is noisy, so averaged over the first and last "
                     f"{TREND_WINDOW} steps, {trend}.")
        claims.update(forget_loss=f.run.forget_loss, retain_loss=f.run.retain_loss, forget_loss_rose=f1 > f0,
                      forget_ends=f.run.forget_ends)
    return TourStep("app/pages/lab.py", "4. Unlearning", text, claims)


def _compare(f: TourFacts) -> TourStep:
    text = ("Rankings of a forgotten and a retained user, every metric next to doing nothing and retrain, the "
            "gradient-conflict heatmaps before and after, and every run on the forgetting-vs-utility plane.")
    claims: dict = {}
    if f.run is not None:
        if f.run.gap_closed is None or f.run.retrain_distance is None:
            gap = "found no measurable memorisation to remove"
        else:
            over = (", past the retrain: over-forgetting, which the distance counts against it"
                    if f.run.gap_closed > 1 else "")
            gap = (f"landed at distance {f.run.retrain_distance:.2f} from the retrain (0 = like the retrain, 1 = as "
                   f"far as doing nothing; it closed {f.run.gap_closed:.2f} of the forget-AUC gap{over})")
        text += f" The last {f.run.method} run {gap} at a utility cost of {f.run.utility_cost:.4f} test AUC."
        claims.update(gap_closed=f.run.gap_closed, retrain_distance=f.run.retrain_distance,
                      utility_cost=f.run.utility_cost, over_forgetting=bool(f.run.gap_closed and f.run.gap_closed > 1))
    return TourStep("app/pages/compare.py", "5. Before and after", text, claims)


def _evidence(f: TourFacts) -> TourStep:
    text = ("One run is an anecdote. The study runs every method at several strengths, rates and levels, repeats "
            "the circuit split and measures membership inference; its headline picks each method's strength without the retrain or the "
            "test set: the weakest at which forgotten users look like users no model saw. ")
    text += (f"{f.n_studies} stored stud{'y' if f.n_studies == 1 else 'ies'} to read." if f.n_studies else
             "No study stored yet: the quick one runs from that page (or `cure study --quick`; "
             + (f"it took {_minutes(f.study_seconds)} here last time)." if f.study_seconds else
                f"not run here yet: budget {_minutes(typical_seconds('study', None))} on 2 cores)."))
    return TourStep("app/pages/evidence.py", "6. The evidence", text, {"n_studies": f.n_studies})


def tour_steps(f: TourFacts) -> list[TourStep]:
    return [_overview(f), _trace(f), _circuits(f), _lab(f), _compare(f), _evidence(f)]


def _has_retrain(ws, original, forget) -> bool:
    from .errors import CureError
    from .unlearn.lab import retrain_cached

    try:
        return retrain_cached(ws, original, forget)
    except CureError:  # a model without a training recipe has no retrain at all: the tour says so elsewhere
        return False


def tour_facts(ws, original, request: ForgetSpec, settings: CircuitSettings, thresholds: GroupThresholds,
               baseline: Scorecard, picked: tuple[str, ...] = ()) -> TourFacts:
    """Everything the tour states, read from cache/ (nothing is computed if it is missing)."""
    from .study.result import list_reports
    from .unlearn.lab import list_runs

    forget = ws.forget_set(request)
    m = ModelCard.of(original).scorecard
    result = cached_circuits(ws, original, forget, settings, thresholds)
    groups = stability = None
    rows = 0
    sentences: tuple[str, ...] = ()
    if result is not None:
        groups = result.node_groups.sizes()
        s = result.node_groups.stability()
        stability = s.jaccard if s else None
        rows = result.node_groups.sizes_by_kind().get("item-row", {}).get("forget-specific", 0)
        sentences = tuple(g.sentence for g in describe(result.node_groups))
    runs = [r for r in list_runs(ws.root) if r.forget.spec == str(forget.spec) and r.method is UnlearningMethod.CURE]
    costs = Path(ws.root) / TIMINGS
    return TourFacts(str(forget.spec), m.auc, baseline.auc, m.hr_at_10, baseline.hr_at_10, groups, stability, rows,
                     tuple(picked), run_facts(runs[0]) if runs else None, len(list_reports(ws.root)),
                     typical_seconds("circuits", costs),
                     # what a first CURE run of this request still has to do here: cached stages cost nothing
                     typical_seconds("unlearn", costs, tuple(name for name, done in (
                         ("retrain", _has_retrain(ws, original, forget)), ("circuits", result is not None))
                         if done)), sentences,
                     measured_seconds("study", costs))
