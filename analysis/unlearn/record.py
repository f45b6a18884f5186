"""One unlearning run as typed records: what `lab.unlearn` stores in run.json and every reader gets back.

The cache holds JSON (run.json); these frozen dataclasses are its only readers and writers
(`RunRecord.from_json` / `to_json`), so the app, the study, the tour, the CLI and the
benchmarks follow a number by attribute from where compare.py computes it. Each number is
stored once: the yardstick's numbers live in `yardstick` only (records written before this
type also copied four of them into the run's metrics; `from_json` ignores the copies).

The JSON layout is the one run.json always had (the matched attack and the never-trained
forget view sit inside the run's "metrics"), so stored runs keep loading.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..data.forget import ForgetSummary
from .conflict import ConflictMap
from .methods import UnlearningMethod
from .yardstick import Yardstick

T = TypeVar("T")
RUN = "run.json"  # a run's folder: this record, and the unlearned model under MODEL
MODEL = "model"
MODELS = ("run", "original", "retrain")  # the three models every run is scored beside


def _known(cls, d: dict) -> dict:
    """The JSON fields `cls` declares (missing optional ones take the class default)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class Trio(Generic[T]):
    """One quantity for the run, the original (do nothing) and the retrain (gold)."""
    run: T
    original: T
    retrain: T

    @classmethod
    def from_json(cls, d: dict) -> "Trio":
        return cls(d.get("run"), d.get("original"), d.get("retrain"))

    def to_json(self) -> dict:
        return {"run": self.run, "original": self.original, "retrain": self.retrain}


@dataclass(frozen=True)
class ModelMetrics:
    """One model's numbers on the request's fixed sample sets (compare.sample_sets); JSD is to the retrain."""
    auc_test: float
    acc_test: float
    logloss_test: float
    auc_valid: float
    logloss_valid: float
    auc_forget: float
    acc_forget: float
    logloss_forget: float
    mia_auc: float  # the older attack (forget vs test samples): confounded by time, kept beside
    jsd_forget: float
    jsd_test: float
    auc_forget_unseen: float | None = None  # None: the request has no never-trained samples
    logloss_forget_unseen: float | None = None
    mia_never_seen_auc: float | None = None  # the matched attack, train phase
    mia_never_seen_valid_auc: float | None = None  # and validation phase (None for interaction requests)

    @classmethod
    def from_json(cls, d: dict) -> "ModelMetrics":
        return cls(**_known(cls, d))

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items()
                if v is not None or k in ("auc_forget_unseen", "logloss_forget_unseen")}


@dataclass(frozen=True)
class AttackView:
    """One phase of the matched attack for the three models, with intervals over users (None where a
    never-seen half has one user: nothing to resample)."""
    auc: Trio[float]
    interval: Trio[tuple[float | None, float | None]]
    indistinguishable: Trio[bool]
    resamples: str

    @classmethod
    def from_json(cls, d: dict | None) -> "AttackView | None":
        if d is None:
            return None
        return cls(Trio.from_json(d), Trio.from_json({k: tuple(v) for k, v in d["interval"].items()}),
                   Trio.from_json(d["indistinguishable"]), d["resamples"])

    def to_json(self) -> dict:
        return {**self.auc.to_json(), "interval": {k: list(v) for k, v in self.interval.to_json().items()},
                "indistinguishable": self.indistinguishable.to_json(), "resamples": self.resamples}


@dataclass(frozen=True)
class UnseenView:
    """Forget metrics on the request's never-trained samples; a distance only where the original-retrain gap
    exceeds compare.UNSEEN_MIN_GAP (else None: it would divide by noise)."""
    auc: Trio[float]
    logloss: Trio[float]
    n: int
    gap: float
    run_minus_retrain: float
    retrain_distance: float | None

    @classmethod
    def from_json(cls, d: dict | None) -> "UnseenView | None":
        if d is None:
            return None
        return cls(Trio.from_json(d["auc"]), Trio.from_json(d["logloss"]), d["n"], d["gap"], d["run_minus_retrain"],
                   d["retrain_distance"])

    def to_json(self) -> dict:
        return {"auc": self.auc.to_json(), "logloss": self.logloss.to_json(), "n": self.n, "gap": self.gap,
                "run_minus_retrain": self.run_minus_retrain, "retrain_distance": self.retrain_distance}


@dataclass(frozen=True)
class RankingAgreement:
    """The share of do nothing's top-10 items a run keeps, per side (None: no users on that side)."""
    forget_users: float | None
    retain_users: float | None


@dataclass(frozen=True)
class UserRecognition:
    """How recognisable one forgotten user is to the matched attack: share of never-seen users exceeded."""
    user: int
    before: float
    after: float
    retrain: float


@dataclass(frozen=True)
class Comparison:
    """A run beside the retrain and the original (compare.compare_to_retrain)."""
    metrics: Trio[ModelMetrics]
    yardstick: Yardstick
    attack: AttackView | None  # the matched attack on the training phase: the headline attack
    attack_valid: AttackView | None  # on the validation phase: what the retrain-free strength rule reads
    forget_unseen: UnseenView | None
    ranking_agreement: RankingAgreement | None  # None: stored without rankings (a study's cells)
    per_user: tuple[UserRecognition, ...]


@dataclass(frozen=True)
class ConflictSummary:
    negative_share: float
    mean_cos: float
    module_steps: int


@dataclass(frozen=True)
class ConflictRecord:
    """Raw conflict before and after the run, and over the steps: the rule's forget part (`applied`) and the
    parameter change actually applied after the optimiser (`applied_update`), each against the retain gradient."""
    before: ConflictMap
    after: ConflictMap
    applied: ConflictSummary
    applied_update: ConflictSummary | None = None

    @classmethod
    def from_json(cls, d: dict | None) -> "ConflictRecord | None":
        if d is None:
            return None
        update = d.get("applied_update")
        return cls(ConflictMap.from_json(d["before"]), ConflictMap.from_json(d["after"]),
                   ConflictSummary(**d["applied"]), ConflictSummary(**update) if update else None)

    def to_json(self) -> dict:
        out = {"before": self.before.to_json(), "after": self.after.to_json(), "applied": asdict(self.applied)}
        if self.applied_update is not None:
            out["applied_update"] = asdict(self.applied_update)
        return out


@dataclass(frozen=True)
class Stopped:
    """Why a run ended: its budget, the auto stop's attack (with its interval) or the loss target."""
    reason: str
    step: int
    target_loss: float | None = None
    attack: float | None = None
    low: float | None = None
    high: float | None = None

    @property
    def early(self) -> bool:
        return self.reason != "budget"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "target_loss"}


@dataclass(frozen=True)
class RunRecord:
    """One stored run (cache/runs/<key>/run.json) and where its models are."""
    method: UnlearningMethod
    config: dict[str, Any]  # UnlearnConfig.key(): the run's identity, shown and downloaded as it is
    forget: ForgetSummary
    seconds: float
    retrain_seconds: float
    retrain_trained_in_this_run: bool
    circuits: dict[str, Any] | None  # the circuit groups used (lab.unlearn writes them; shown as stored)
    rules: dict[str, str]
    conflict: ConflictRecord | None
    curves: tuple[dict[str, Any], ...]  # one row per step: a table the charts plot as it is
    stopped: Stopped | None
    steps_run: int
    steps_budget: int
    comparison: Comparison
    original_dir: str
    retrain_dir: str
    run_dir: str = ""
    model_dir: str = ""  # the unlearned model (the retrain's folder for a retrain "run")
    stage_seconds: dict[str, float] | None = None  # analysis/clock.py's split; None in older records

    # the comparison's parts, read everywhere
    @property
    def metrics(self) -> ModelMetrics:
        return self.comparison.metrics.run

    @property
    def original(self) -> ModelMetrics:
        return self.comparison.metrics.original

    @property
    def retrain(self) -> ModelMetrics:
        return self.comparison.metrics.retrain

    @property
    def yardstick(self) -> Yardstick:
        return self.comparison.yardstick

    @property
    def lr(self) -> float | None:
        return self.config.get("lr")

    @property
    def name(self) -> str:
        """The run's folder name (its cache key)."""
        return Path(self.run_dir).name

    @classmethod
    def from_json(cls, d: dict, run_dir: str | Path = "") -> "RunRecord":
        m = d["metrics"]
        agreement = d.get("ranking_agreement")
        comparison = Comparison(
            Trio(ModelMetrics.from_json(m), ModelMetrics.from_json(d["original"]),
                 ModelMetrics.from_json(d["retrain"])),
            Yardstick.from_json(d["yardstick"]), AttackView.from_json(m.get("mia_never_seen")),
            AttackView.from_json(m.get("mia_never_seen_valid")), UnseenView.from_json(m.get("forget_unseen")),
            RankingAgreement(**agreement) if agreement else None,
            tuple(UserRecognition(**u) for u in d.get("per_user") or ()))
        stopped = d.get("stopped")
        run_dir = str(run_dir)
        model_dir = d.get("model_dir") or (str(Path(run_dir) / MODEL) if run_dir else "")
        return cls(UnlearningMethod(d["method"]), d["config"], ForgetSummary(**d["forget"]), d["seconds"],
                   d["retrain_seconds"], d.get("retrain_trained_in_this_run", False), d.get("circuits"),
                   d.get("rules") or {}, ConflictRecord.from_json(d.get("conflict")), tuple(d.get("curves") or ()),
                   Stopped(**stopped) if stopped else None, d.get("steps_run", 0), d.get("steps_budget", 0),
                   comparison, d["original_dir"], d["retrain_dir"], run_dir, model_dir, d.get("stage_seconds"))

    def to_json(self) -> dict:
        """run.json as stored (no run_dir: a record is read from wherever its folder is)."""
        c = self.comparison
        metrics = c.metrics.run.to_json()
        for name, view in (("mia_never_seen", c.attack), ("mia_never_seen_valid", c.attack_valid),
                           ("forget_unseen", c.forget_unseen)):
            if view is not None:
                metrics[name] = view.to_json()
        return {"method": self.method.value, "config": self.config, "forget": asdict(self.forget),
                "seconds": self.seconds, "stage_seconds": self.stage_seconds, "retrain_seconds": self.retrain_seconds,
                "retrain_trained_in_this_run": self.retrain_trained_in_this_run, "circuits": self.circuits,
                "rules": self.rules, "conflict": self.conflict.to_json() if self.conflict else None,
                "curves": list(self.curves), "stopped": self.stopped.to_json() if self.stopped else None,
                "steps_run": self.steps_run, "steps_budget": self.steps_budget, "metrics": metrics,
                "retrain": c.metrics.retrain.to_json(), "original": c.metrics.original.to_json(),
                "ranking_agreement": asdict(c.ranking_agreement) if c.ranking_agreement else None,
                "yardstick": c.yardstick.to_json(), "per_user": [asdict(u) for u in c.per_user],
                "model_dir": self.model_dir if self.method is UnlearningMethod.RETRAIN else None,
                "original_dir": self.original_dir, "retrain_dir": self.retrain_dir}
