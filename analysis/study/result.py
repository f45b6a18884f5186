"""A study's results as typed records: what `run_study` returns, and what the report, the Evidence page, the tour
and the lab's training-noise quote read. `to_json` is study.json's layout; `from_json` reads it back, older
reports included (a section they predate comes back empty or None, as the readers expect).

Tables stay tables: a section's rows (one per cell, or one per method and strength) carry some sixty metric
columns, are read by column name and become DataFrames, CSV and HTML tables; `Row` names such a row. The
records below are what holds those tables together: which section, which groups, which dataset.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..cache import read_json
from ..model.recommender import Recommender
from ..workspace import Workspace
from .noise import TrainingNoise, noise_identity

REPORTS = "reports"  # cache/reports/<key>/: report.html, study.json, table.csv

Row = dict[str, object]  # one row of a table: a cell's metrics, or a summary over deletion draws (summary.py)


@dataclass(frozen=True)
class OtherSeedGroups:
    """CURE with groups found on another circuit seed (other prompts and corruption draws) against its own."""
    same_groups: float | None  # share of nodes labelled alike
    cure_with_own_groups: Row | None
    cure_with_other_groups: Row | None


@dataclass(frozen=True)
class Reproducibility:
    prompt_seeds: list[dict[str, float | None] | None]  # per deletion draw: Jaccard per group over prompt seeds
    prompt_seed_sizes: list[dict[str, list[int]] | None]
    deletion_draws: dict[str, float | None] | None  # Jaccard per group across deletion draws (None: one draw)
    group_sizes: list[dict[str, int]]  # per deletion draw
    other_seed: OtherSeedGroups

    def to_json(self) -> dict:
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "other_seed"}, "groups_from_other_circuit_seed": d["other_seed"]}

    @classmethod
    def from_json(cls, d: dict) -> "Reproducibility":
        other = d.get("groups_from_other_circuit_seed") or {}
        return cls(d["prompt_seeds"], d.get("prompt_seed_sizes") or [], d.get("deletion_draws"),
                   d.get("group_sizes") or [], OtherSeedGroups(*(other.get(k) for k in (
                       "same_groups", "cure_with_own_groups", "cure_with_other_groups"))))


@dataclass(frozen=True)
class Ablation:
    """The arms (uniform NPO, NPO + PCGrad, NPO + SalUn, CURE, CURE with random groups) at the rule's strengths,
    and CURE minus each other arm paired by deletion draw (summary.paired_difference per metric)."""
    arms: list[Row] = field(default_factory=list)  # empty: a report written before the ablation existed
    cure_minus: dict[str, dict[str, dict]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> "Ablation":
        return cls(d["arms"], d["cure_minus"]) if d and "arms" in d else cls()


@dataclass(frozen=True)
class TransferBack:
    """The reverse direction: CURE on the second dataset with its own groups and with the groups found here."""
    on: str
    groups_from: str
    cure_with_own_groups: Row | None
    cure_with_transferred_groups: Row | None


@dataclass(frozen=True)
class TransferSection:
    """CURE with groups found elsewhere (another deletion draw, or the same request on a second dataset) against
    CURE with its own; or why the section was skipped."""
    skipped: str | None = None
    groups_from: list[str] = field(default_factory=list)
    same_groups: float | None = None
    cure_with_own_groups: Row | None = None
    cure_with_transferred_groups: Row | None = None
    # across datasets only: the request's split per node kind on each dataset, and the reverse direction
    sizes_here: list[dict] | None = None
    sizes_there: list[dict] | None = None
    item_rows: str | None = None  # why item rows do not travel
    back: TransferBack | None = None

    def to_json(self) -> dict:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        d = asdict(self)
        keep = ("groups_from", "same_groups", "cure_with_own_groups", "cure_with_transferred_groups")
        if self.sizes_here is not None:
            keep += ("sizes_here", "sizes_there", "item_rows", "back")
        return {k: d[k] for k in keep}

    @classmethod
    def from_json(cls, d: dict) -> "TransferSection":
        known, back = {f.name for f in fields(cls)}, d.get("back")
        return cls(**{**{k: v for k, v in d.items() if k in known}, "back": TransferBack(**back) if back else None})


@dataclass(frozen=True)
class TransferDataset:
    name: str
    fingerprint: str


@dataclass(frozen=True)
class StudyResult:
    config: dict  # StudyConfig.key(): what the study asked for (and part of its report's key)
    rows: list[Row]  # one per cell: the flat table stored as table.csv
    default_lr: float
    compared_methods: list[str]  # CURE and the two baselines nearest the retrain (rates, levels, noise)
    pareto: list[Row]  # per (method, lr): mean and spread over deletion draws
    headline: list[Row]  # per method: the Pareto row at the strength the retrain-free rule chose
    training_noise: TrainingNoise | None
    headline_with_training_noise: list[Row]
    rates: list[Row]
    levels: list[Row]
    reproducibility: Reproducibility
    ablation: Ablation
    transfer: dict[str, TransferSection]  # "across_draws", "across_datasets"
    transfer_dataset: TransferDataset | None
    seconds: float

    @property
    def seeds(self) -> list[int]:
        """The deletion draws."""
        return list(self.config["seeds"])

    def to_json(self) -> dict:
        return {"config": self.config, "rows": self.rows, "default_lr": self.default_lr,
                "compared_methods": self.compared_methods, "pareto": self.pareto, "headline": self.headline,
                "training_noise": None if self.training_noise is None else self.training_noise.to_json(),
                "headline_with_training_noise": self.headline_with_training_noise,
                "rates": self.rates, "levels": self.levels, "reproducibility": self.reproducibility.to_json(),
                "ablation": self.ablation.to_json(),
                "transfer": {k: t.to_json() for k, t in self.transfer.items()},
                "transfer_dataset": None if self.transfer_dataset is None else asdict(self.transfer_dataset),
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict) -> "StudyResult":
        transfer = d.get("transfer") or {}
        if "skipped" in transfer:  # a report written before transfer across draws existed
            transfer = {"across_datasets": transfer}
        noise, other = d.get("training_noise"), d.get("transfer_dataset")
        return cls(d["config"], d["rows"], d["default_lr"], d["compared_methods"], d["pareto"], d.get("headline") or [],
                   None if not noise else TrainingNoise.from_json(noise), d.get("headline_with_training_noise") or [],
                   d["rates"], d["levels"], Reproducibility.from_json(d["reproducibility"]),
                   Ablation.from_json(d.get("ablation")), {k: TransferSection.from_json(t) for k, t in transfer.items()},
                   None if not other else TransferDataset(other["name"], other["fingerprint"]), d.get("seconds", 0.0))


@dataclass(frozen=True)
class ReportMeta:
    """How a report came about: what to run to reproduce it, on what, and what it cost."""
    title: str
    seeds: list[int]
    versions: dict[str, str]
    machine: dict
    wall_seconds: float
    # what its steps and retrains cost when computed (a resumed study's wall time is short)
    unlearning_and_retrain_seconds: float | None
    command: str

    @classmethod
    def from_json(cls, d: dict) -> "ReportMeta":
        return cls(d["title"], d["seeds"], d.get("versions") or {}, d.get("machine") or {}, d["wall_seconds"],
                   d.get("unlearning_and_retrain_seconds"), d.get("command", "cure study"))


@dataclass(frozen=True)
class StoredReport:
    """A study report in cache/reports: its folder (report.html, study.json, table.csv), results and meta."""
    path: Path
    result: StudyResult
    meta: ReportMeta

    @property
    def label(self) -> str:
        return (f"{len(self.result.seeds)} seed(s) · {len(self.result.rows)} cells · {self.meta.wall_seconds:.0f} s · "
                f"{self.path.name}")


def list_reports(root: Path) -> list[StoredReport]:
    """The reports in the cache, newest first; an unreadable one is skipped, never fatal to the listing."""
    out = []
    for folder in sorted((Path(root) / REPORTS).glob("[0-9a-f]*"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            stored = read_json(folder / "study.json")
            out.append(StoredReport(folder, StudyResult.from_json(stored), ReportMeta.from_json(stored["meta"])))
        except Exception:
            continue
    return out


def quote_for(reports: list[StoredReport], data: str, model: str, request: str) -> TrainingNoise | None:
    """The newest study report's training noise for this data, model and request (reports newest first)."""
    for report in reports:
        found = report.result.training_noise
        if found and (found.data, found.model, found.request) == (data, model, request) and len(found.seeds) > 1:
            return found
    return None


def study_noise(ws: Workspace, original: Recommender, request: str) -> TrainingNoise | None:
    """What the lab quotes beside its one retrain: the newest study's training noise for this request
    (`request`: the forget set's spec as a string), or None where no study measured it."""
    return quote_for(list_reports(ws.root), *noise_identity(ws, original), request)
