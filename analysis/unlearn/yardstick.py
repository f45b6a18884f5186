"""The yardstick: every run scored against doing nothing (the original) and against retrain.

JSD to retrain alone rewards a no-op whenever the original already sits close to the
retrain (0.006 on the default model and users:0.1), so the headline is relative:

* retrain_distance = |AUC_forget(run) - AUC_forget(retrain)| / |AUC_forget(original) -
  AUC_forget(retrain)|: 0 = like the retrain, 1 = as far from it as doing nothing, *in
  either direction*. The headline and every ranking: the lab's default CURE run closed 1.33
  of the gap (over-forgetting) and signed gap closed ranked it above a run at 0.95;
  in distance it is 0.33 against 0.05;
* gap_closed[m] = (m(original) - m(run)) / (m(original) - m(retrain)) for forget AUC,
  forget log-loss and MIA AUC, signed, beside it: 0 = did nothing, 1 = like retrain,
  > 1 = over-forgetting (forgotten samples that look *less* familiar than never-seen ones
  are themselves a membership signal, so it is flagged, not rewarded);
* jsd_ratio = JSD(run, retrain) / JSD(original, retrain) on forget samples (< 1: closer to
  retrain than doing nothing);
* utility_cost = test AUC(original) - test AUC(run).

The original-retrain gap gets a bootstrap interval over forget samples; when it includes
0 (a tiny request, say) there is no measurable memorisation to remove and gap_closed is
None with that note, instead of a ratio of noise.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..metrics import jsd

RESAMPLES = 200  # forget-sample bootstrap of the gap; AUC on ~7k samples per resample
MIA_MIN_GAP = 0.01  # the attack AUC has no interval here; closer than this, its gap is left unscored
LEVEL = 0.95
NO_GAP = "no measurable memorisation to remove: the original-retrain gap's interval includes 0"


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank AUC (ties averaged); nan with one class."""
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def forget_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The rank AUC the yardstick uses (ties averaged), for callers comparing models outside one run."""
    return _auc(np.asarray(scores, dtype=np.float64), np.asarray(labels))


def _logloss(scores: np.ndarray, labels: np.ndarray) -> float:
    # -log sigmoid(s) for positives, -log sigmoid(-s) for negatives, computed stably
    signed = np.where(labels == 1, scores, -scores)
    return float(np.mean(np.logaddexp(0.0, -signed)))


def _closed(original: float, run: float, retrain: float) -> float | None:
    gap = original - retrain
    return None if gap == 0 or not np.isfinite(gap) else float((original - run) / gap)


def retrain_distance(original: float | None, run: float | None, retrain: float | None) -> float | None:
    """|run - retrain| / |original - retrain|: 0 = the retrain, 1 = as far as doing nothing; None without a gap."""
    if original is None or run is None or retrain is None:
        return None
    gap = abs(original - retrain)
    return None if gap == 0 or not np.isfinite(gap) else float(abs(run - retrain) / gap)


@dataclass(frozen=True)
class GapInterval:
    """The original-retrain forget-AUC gap with its forget-sample bootstrap interval (sample noise only)."""
    gap: float
    low: float
    high: float

    @property
    def measurable(self) -> bool:
        """The interval excludes 0: there is memorisation to remove."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high)) and (self.low > 0 or self.high < 0)


def gap_interval(original: np.ndarray, retrain: np.ndarray, labels: np.ndarray, seed: int = 0) -> GapInterval:
    """AUC(original) - AUC(retrain) on the same forget samples, resampled together (RESAMPLES, LEVEL)."""
    o, r = np.asarray(original, dtype=np.float64), np.asarray(retrain, dtype=np.float64)
    y = np.asarray(labels)
    idx = np.random.default_rng(seed).integers(0, len(y), size=(RESAMPLES, len(y)))
    gaps = np.array([_auc(o[i], y[i]) - _auc(r[i], y[i]) for i in idx])
    gaps = gaps[np.isfinite(gaps)]
    lo, hi = (np.quantile(gaps, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2]) if len(gaps) else (np.nan, np.nan))
    return GapInterval(_auc(o, y) - _auc(r, y), float(lo), float(hi))


@dataclass(frozen=True)
class GapClosed:
    """Signed share of the original-retrain gap a run closed, per measure (None: no measurable gap)."""
    auc_forget: float | None
    logloss_forget: float | None
    mia_auc: float | None


@dataclass(frozen=True)
class GapRecord:
    """The forget-AUC gap as stored: estimate, bootstrap interval and how it was resampled."""
    auc_forget: float
    low: float
    high: float
    resamples: int
    level: float


@dataclass(frozen=True)
class Yardstick:
    """A run's numbers relative to doing nothing and to the retrain (module docstring)."""
    retrain_distance: float | None
    gap_closed: GapClosed
    gap: GapRecord
    measurable: bool
    jsd_ratio: float | None
    utility_cost: float
    over_forgetting: bool
    note: str

    @classmethod
    def from_json(cls, d: dict) -> "Yardstick":
        return cls(d["retrain_distance"], GapClosed(**d["gap_closed"]), GapRecord(**d["gap"]), d["measurable"],
                   d["jsd_ratio"], d["utility_cost"], d["over_forgetting"], d["note"])

    def to_json(self) -> dict:
        return asdict(self)


def yardstick(forget_scores: dict[str, np.ndarray], forget_labels: np.ndarray, metrics: dict[str, dict],
              seed: int = 0) -> Yardstick:
    """forget_scores and metrics for "run", "retrain", "original" -> the relative headline numbers."""
    f = {k: np.asarray(v, dtype=np.float64) for k, v in forget_scores.items()}
    y = np.asarray(forget_labels)
    interval = gap_interval(f["original"], f["retrain"], y, seed)
    lo, hi, measurable = interval.low, interval.high, interval.measurable
    auc = {k: _auc(f[k], y) for k in f}
    loss = {k: _logloss(f[k], y) for k in f}
    mia = {k: metrics[k]["mia_auc"] for k in ("run", "retrain", "original")}
    closed = {"auc_forget": _closed(auc["original"], auc["run"], auc["retrain"]),
              "logloss_forget": _closed(loss["original"], loss["run"], loss["retrain"]),
              "mia_auc": (_closed(mia["original"], mia["run"], mia["retrain"])
                          if abs(mia["original"] - mia["retrain"]) >= MIA_MIN_GAP else None)}
    if not measurable:
        closed = {k: None for k in closed}
    base = jsd(f["original"], f["retrain"])
    ratio = jsd(f["run"], f["retrain"]) / base if base > 0 else None
    over = closed["auc_forget"] is not None and closed["auc_forget"] > 1.0
    return Yardstick(
        retrain_distance=(retrain_distance(auc["original"], auc["run"], auc["retrain"]) if measurable else None),
        gap_closed=GapClosed(**closed),
        gap=GapRecord(auc["original"] - auc["retrain"], float(lo), float(hi), RESAMPLES, LEVEL),
        measurable=measurable,
        jsd_ratio=ratio,
        utility_cost=metrics["original"]["auc_test"] - metrics["run"]["auc_test"],
        over_forgetting=over,
        note=NO_GAP if not measurable else ("over-forgetting: forget samples now look less familiar than "
                                            "never-seen ones, itself a membership signal" if over else ""),
    )
