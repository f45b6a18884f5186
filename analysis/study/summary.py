"""The study's summaries: means over draws, paired differences with intervals, the rule's choice per method.

Rows are the grid's cells as stored (grid._run_cell). An *arm* is what a row ran: the
method, with the forget objective when it is not the method's own ("npo+pcgrad"), and
"cure (random groups)" for the ablation, so the same method on another objective or with
shuffled groups is never averaged with the plain one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import bootstrap

from ..pareto import rank_runs
from ..unlearn.attack import AttackResult
from ..unlearn.strength import StrengthPoint, choose_strength
from .result import Ablation, Row

BASELINES = ("ga", "graddiff", "npo", "kl", "pcgrad", "salun")
METRICS = ("jsd_forget", "jsd_test", "auc_test", "auc_forget", "mia_auc", "auc_valid", "auc_forget_unseen",
           "mia_never_seen_auc", "mia_never_seen_valid_auc")
# against doing nothing and retrain (yardstick.py); retrain distance ranks, signed gap closed beside it
RELATIVE = ("retrain_distance", "gap_closed", "jsd_ratio", "utility_cost")
RANDOM_GROUPS = "cure (random groups)"


def arm_of(method: str, objective: str | None = None, random_groups: int | None = None) -> str:
    """What a cell ran, as one name: the method, its objective when another was asked for, or CURE's ablation."""
    if random_groups is not None:
        return RANDOM_GROUPS
    return method if objective is None else f"{objective}+{method}"


def summarise(rows: list[Row], by: tuple[str, ...]) -> list[Row]:
    """Mean and standard deviation over seeds of every metric, per group of `by`."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, members in groups.items():
        entry = dict(zip(by, key))
        entry["n_seeds"] = len(members)
        for m in (*METRICS, *RELATIVE, "valid_drop", "seconds", "applied_conflict", "retrain_mia_auc", "retrain_auc_test",
                  "mia_never_seen_valid_low", "retrain_mia_never_seen_auc", "original_mia_never_seen_auc",
                  "original_mia_never_seen_valid_auc", "original_mia_never_seen_valid_low",
                  "original_jsd_forget", "original_auc_forget", "original_mia_auc", "original_auc_test"):
            values = np.array([r[m] for r in members if r.get(m) is not None], dtype=float)
            entry[m] = float(values.mean()) if len(values) else None
            entry[f"{m}_std"] = float(values.std()) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def cure_summary(rows: list[Row]) -> Row | None:
    found = summarise([r for r in rows if r["method"] == "cure"], ("method",))
    return found[0] if found else None


@dataclass(frozen=True)
class Interval:
    """A mean over n values with its 95% bootstrap interval (None: fewer than 3 values, or no spread)."""
    mean: float | None
    n: int
    low: float | None = None
    high: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def mean_interval(values: list[float]) -> Interval:
    """Mean with a 95% percentile bootstrap interval (scipy) from 3 values on; no interval without spread."""
    mean = float(np.mean(values)) if values else None
    if len(values) >= 3 and np.ptp(values) > 0:
        ci = bootstrap((np.array(values, dtype=float),), np.mean, n_resamples=2000, method="percentile",
                       rng=np.random.default_rng(0)).confidence_interval
        return Interval(mean, len(values), float(ci.low), float(ci.high))
    return Interval(mean, len(values))


def paired_difference(a: list[Row], b: list[Row], key: str) -> dict:
    """Mean of a - b over the deletion draws both ran, with a 95% bootstrap interval (scipy) from 3 draws on
    (as the report's ablation table stores it: the count is of draws)."""
    other = {r["seed"]: r[key] for r in b if r.get(key) is not None}
    out = mean_interval([r[key] - other[r["seed"]] for r in a if r.get(key) is not None and r["seed"] in other])
    return {"mean": out.mean, "n_draws": out.n, "low": out.low, "high": out.high}


def strongest_baselines(summary: list[Row], lr: float, n: int = 2) -> list[str]:
    """The baselines nearest the retrain at the given lr: ranked by retrain distance and utility cost (means),
    so a baseline that overshoots the retrain does not outrank one that lands on it."""
    at = [s for s in summary if s["method"] in BASELINES and s["lr"] == lr]
    order = rank_runs([s["retrain_distance"] for s in at], [s["utility_cost"] or 0.0 for s in at])
    return [at[i]["method"] for i in order[:n]]


def chosen_by_attack(summary: list[Row], by: str = "method") -> list[Row]:
    """Per method (or arm), the summary row at the strength the retrain-free rule picks (strength.choose_strength:
    the weakest lr whose forgotten users are indistinguishable from never-seen users on validation-period
    samples, mean over draws); reads neither the retrain nor the test set. Methods without the attack (an
    interaction-level request) fall back to the weakest lr."""
    out = []
    for name in dict.fromkeys(s[by] for s in summary):
        mine = sorted((s for s in summary if s[by] == name), key=lambda s: s["lr"])
        usable = [s for s in mine if s.get("mia_never_seen_valid_auc") is not None]
        if not usable or name == "retrain":
            out.append({**mine[0], "chosen_by": "weakest (no attack)" if name != "retrain" else "retrain"})
            continue
        first = usable[0]
        before = (AttackResult.from_record(first["original_mia_never_seen_valid_auc"],
                                           first.get("original_mia_never_seen_valid_low"))
                  if first.get("original_mia_never_seen_valid_auc") is not None else None)
        choice = choose_strength([StrengthPoint(s["lr"], AttackResult.from_record(
            s["mia_never_seen_valid_auc"], s.get("mia_never_seen_valid_low"))) for s in usable], before)
        out.append({**next(s for s in usable if s["lr"] == choice.strength), "chosen_by": choice.reason})
    return out


@dataclass(frozen=True)
class Chosen:
    """The strength the retrain-free rule picked for one method (or arm), and why."""
    lr: float
    reason: str


def chosen_on_draw(rows: list[Row], draw: int, by: str = "method") -> dict[str, Chosen]:
    """Per method (or arm), the rule's strength read on one deletion draw, the *selection draw*: only its rows
    ran every strength (the study's other draws run the pick alone, grid.run_study), so the choice is made where
    every candidate was measured and then carried to draws it never saw."""
    picked = chosen_by_attack(summarise([r for r in rows if r["seed"] == draw], (by, "lr")), by=by)
    return {p[by]: Chosen(p["lr"], p["chosen_by"]) for p in picked}


def at_chosen(summary: list[Row], chosen: dict[str, Chosen], by: str = "method") -> list[Row]:
    """The summary rows (means over every draw that ran them) at each method's chosen strength, with its reason."""
    return [{**s, "chosen_by": chosen[s[by]].reason} for s in summary
            if s[by] in chosen and s["lr"] == chosen[s[by]].lr]


ABLATION_KEYS = ("retrain_distance", "utility_cost", "mia_never_seen_auc")
ABLATION_ARMS = ("npo", "npo+pcgrad", "npo+salun", "cure", RANDOM_GROUPS)


def ablation_cells(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r["section"] in ("pareto", "ablation") and r["arm"] in ABLATION_ARMS]


def ablation(rows: list[Row], draw: int) -> Ablation:
    """Uniform NPO, NPO + PCGrad, NPO + SalUn, CURE and CURE with random groups (same sizes per node kind), each
    at the strength the retrain-free rule picks for it on the selection draw `draw`, and CURE minus each other arm
    paired by deletion draw: does the rule beat the plain objective, and does the circuit matter? Same objective
    (NPO) in every arm, so the comparison is of the update rule alone. Reads the Pareto section (npo, cure) and
    the ablation section."""
    mine = ablation_cells(rows)
    picks = chosen_on_draw(mine, draw, by="arm")
    chosen = {s["arm"]: s for s in at_chosen(summarise(mine, ("arm", "lr")), picks, by="arm")}
    at_choice = {arm: [r for r in mine if r["arm"] == arm and r["lr"] == p.lr] for arm, p in picks.items()}
    cure = at_choice.get("cure", [])
    return Ablation([chosen[a] for a in ABLATION_ARMS if a in chosen],
                    {arm: {k: paired_difference(cure, at_choice[arm], k) for k in ABLATION_KEYS}
                     for arm in ABLATION_ARMS if arm != "cure" and arm in at_choice})
