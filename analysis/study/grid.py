"""The evidence study: a grid of unlearning runs that answers the sceptic's questions.

Every cell is an ordinary cached run (cache/runs), every circuit an ordinary cached
circuit result and every retrain an ordinary cached model, so a killed study resumes
where it stopped and recomputes nothing finished. Seeds are deletion draws (the
`--forget-seed` of a fractional request), so the spread of a number is over which users
or interactions were deleted, with their own retrain and circuits each time.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

from ..circuits.discover import CircuitSettings, discover_circuits
from ..circuits.groups import Group, group_stability
from ..data.forget import parse_forget_spec
from ..errors import SettingsError
from ..model.recommender import Recommender
from ..progress import ProgressFn, or_silent
from ..unlearn.lab import retrain_for, unlearn
from ..unlearn.run import UnlearnConfig
from ..workspace import Workspace
from .executors import CellJob, LocalExecutor
from .noise import TrainingNoise, draw_noise, noise_identity, reseeded, training_seeds
from .result import OtherSeedGroups, Reproducibility, Row, StudyResult, TransferBack, TransferDataset, TransferSection
from .summary import (BASELINES, METRICS, RANDOM_GROUPS, Chosen, ablation, ablation_cells, arm_of,  # noqa: F401
                      at_chosen, chosen_by_attack, chosen_on_draw, cure_summary, mean_interval, strongest_baselines,
                      summarise)
from .transfer import (NO_SECOND_DATASET, ONE_DRAW, group_sources, planned, same_label_share, same_recipe_model,
                       sizes_by_kind, transferable)


@dataclass(frozen=True)
class StudyConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    request: str = "users:0.1"  # the Pareto, privacy and reproducibility sections
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)  # the strengths (Adam lr) of the Pareto section
    rates: tuple[str, ...] = ("users:0.01", "users:0.05", "users:0.1", "users:0.2")
    levels: tuple[str, ...] = ("users:0.1", "interactions:0.1", "genre:Horror")
    epochs: float = 1.0  # the budget of every run: passes over the forget set
    steps: int | None = None  # or an explicit step count (tests)
    circuits: CircuitSettings = field(default_factory=CircuitSettings)
    other_circuit_seed: int = 1  # CURE with groups found on other prompts/corruption draws
    # the original and every draw's retrain are trained under this many training seeds (noise.py); the
    # headline methods run on each, so their intervals carry training noise as well as deletion draws
    training_seeds: int = 2

    @classmethod
    def quick(cls) -> "StudyConfig":
        """One seed, one strength and fewer cells, for a first look within 15 minutes on 2 cores.

        Measured cold (only the default model cached): 17.7 min with two strengths and 128
        circuit prompts, of which 4 retrains took 4.8 min and scoring each model ~12 s; one
        strength and 64 prompts drop 6 runs and half of each circuit discovery. With Adam and
        half an epoch per run (issue 12) it took 15 min 46 s, 24 cells; the rates section's
        users:0.05 (its own retrain and 3 runs) is left to the full study.
        """
        return cls(seeds=(0,), lrs=(UnlearnConfig.lr,), rates=("users:0.1",),
                   levels=("users:0.1", "interactions:0.05", "genre:Horror"), epochs=0.5,
                   circuits=CircuitSettings(n_prompts=64, stability_seeds=2), training_seeds=1)

    def __post_init__(self) -> None:
        if self.training_seeds < 1 or not self.seeds or not self.lrs:
            raise SettingsError("a study needs at least one deletion draw, one strength and one training seed")

    def key(self) -> dict:
        d = asdict(self)
        d["circuits"] = self.circuits.key()
        return d


@dataclass
class Cell:
    section: str
    request: str
    method: str
    lr: float
    seed: int
    circuit_seed: int = 0
    groups_from: str = ""  # transfer: where the given groups were found ("" = discovered on this request)
    groups: dict[str, Group] = field(default_factory=dict, repr=False)
    random_groups: int | None = None  # ablation: CURE's groups shuffled within each node kind
    objective: str | None = None  # ablation: a forget objective other than the method's own (npo for pcgrad)
    training_seed: int | None = None  # the original's training seed (None: the study's original itself)

    @property
    def arm(self) -> str:
        return arm_of(self.method, self.objective, self.random_groups)

    def config(self, study: StudyConfig) -> UnlearnConfig:
        circuits = replace(study.circuits, seed=self.circuit_seed)
        return UnlearnConfig(method=self.method, lr=self.lr, epochs=study.epochs, steps=study.steps, circuits=circuits,
                             groups=tuple((m, g.value) for m, g in self.groups.items()),
                             random_groups=self.random_groups, objective=self.objective)


def _run_cell(ws: Workspace, original: Recommender, cell: Cell, study: StudyConfig, progress: ProgressFn) -> Row:
    # no top-10 lists: no section reads them (Compare computes a study run's ranking agreement on demand)
    run = unlearn(ws, original, ws.forget_set(cell.request, seed=cell.seed), cell.config(study), progress,
                  rankings=False)
    y, valid_attack = run.yardstick, run.comparison.attack_valid
    relative = {"gap_closed": y.gap_closed.auc_forget, "retrain_distance": y.retrain_distance,
                "jsd_ratio": y.jsd_ratio, "utility_cost": y.utility_cost}
    # one row of the study's table (a DataFrame, stored as parquet): flat columns by design
    row = {**{k: v for k, v in asdict(cell).items() if k != "groups"}, "arm": cell.arm,
           **{m: getattr(run.metrics, m) for m in METRICS},
           "mia_never_seen_valid_low": valid_attack.interval.run[0] if valid_attack else None,
           "original_mia_never_seen_valid_low": valid_attack.interval.original[0] if valid_attack else None,
           **relative, "valid_drop": run.original.auc_valid - run.metrics.auc_valid,
           **{f"retrain_{m}": getattr(run.retrain, m) for m in METRICS},
           **{f"original_{m}": getattr(run.original, m) for m in METRICS},  # "do nothing", the bar to clear
           "seconds": run.seconds, "retrain_seconds": run.retrain_seconds,
           "applied_conflict": run.conflict.applied.negative_share if run.conflict else None,
           "run_dir": run.run_dir}
    return row


def _draws(spec: str, study: StudyConfig) -> tuple[int, ...]:
    """The deletion draws of a request: one for a deterministic one (a genre), whose spread is then 0 over n=1."""
    return study.seeds if parse_forget_spec(spec).is_random else study.seeds[:1]


def with_training_noise(rows: list[Row], headline: list[Row], methods: list[str],
                        noise: TrainingNoise | None) -> list[Row]:
    """The compared methods at the rule's strengths over every (deletion draw, training seed) pair: retrain
    distance and utility cost with a bootstrap interval over pairs (scipy, from 3 pairs on), next to the noise
    floor (a retrain with another seed, as a run). Empty with one training seed: nothing to add to the headline."""
    if noise is None:
        return []
    out = []
    for h in headline:
        if h["method"] not in methods:
            continue
        mine = [r for r in rows if r["method"] == h["method"] and r["lr"] == h["lr"]
                and (r["section"] == "pareto" or r["section"] == "training_seeds")]
        out.append({"method": h["method"], "lr": h["lr"], "pairs": len(mine),
                    **{k: mean_interval([r[k] for r in mine if r.get(k) is not None]).to_json()
                       for k in ("retrain_distance", "gap_closed", "utility_cost", "mia_never_seen_auc")},
                    "noise_floor": noise.retrain_seed_distance, "gap_measurable": noise.measurable})
    return out


# the transfer sections: where their groups come from (transfer.GroupSource.kind) and why one may be skipped
TRANSFER_SECTIONS = {"across_draws": ("draws", ONE_DRAW), "across_datasets": ("datasets", NO_SECOND_DATASET)}


class _Grid:
    """The cells run so far (rows, in order) and the progress count, which only grows: the grid's size is
    known section by section (the later sections depend on what the Pareto section picks)."""

    def __init__(self, ws: Workspace, original: Recommender, study: StudyConfig, progress: ProgressFn, executor):
        self.ws, self.original, self.study, self.progress, self.executor = ws, original, study, progress, executor
        self.rows: list[Row] = []
        self.done = self.total = 0

    def run(self, cells: list[Cell], on: tuple[Workspace, Recommender] | None = None) -> None:
        data, model = on or (self.ws, self.original)

        def one_done() -> None:
            self.done += 1
            self.progress("study", self.done, self.total)
        self.rows += self.executor.run([CellJob(data, model, cell, self.study) for cell in cells], _run_cell,
                                       self.progress, one_done)

    def section(self, name: str) -> list[Row]:
        return [r for r in self.rows if r["section"] == name]


def run_study(ws: Workspace, original: Recommender, study: StudyConfig, progress: ProgressFn | None = None,
              transfer: Workspace | None = None, executor=None) -> StudyResult:
    """Run (or load) every cell; returns the rows and each section's summary.

    Strengths are swept on one deletion draw only, the first (the *selection draw*): there every method and
    ablation arm runs at every strength, and the retrain-free rule picks one per method from its validation-period
    attack. The other draws run each method at its pick (and at the lab's default, which the rates, levels,
    reproducibility and transfer sections compare at), so the question is asked once instead of once per draw:
    with 3 draws and 3 strengths, 53 Pareto and ablation cells instead of 93 (the pick equal to the default).

    `executor` (executors.py): where cells run, one after another here (default) or as Ray tasks."""
    start = time.perf_counter()
    grid = _Grid(ws, original, study, or_silent(progress), executor or LocalExecutor())
    default_lr = UnlearnConfig.lr if UnlearnConfig.lr in study.lrs else study.lrs[0]
    seeds = _draws(study.request, study)  # the Pareto, reproducibility and transfer sections' draws
    selection, others = seeds[0], seeds[1:]
    sweep = _sweep_cells(study, selection, default_lr)
    # a first estimate of the size (the other draws: every method, arm and the retrain once; reproducibility: 1 per
    # draw; training noise: retrain + 3 methods; rates and levels: 3 methods per draw)
    grid.total = len(sweep) + len(others) * (len(METHODS) + 1 + len(SWEPT_ARMS)) + planned(seeds, transfer) + len(
        seeds) * (1 + 4 * (study.training_seeds - 1)) + 3 * sum(
        len(_draws(spec, study)) for spec in (*study.rates, *study.levels))
    grid.run(sweep)
    picks = chosen_on_draw(grid.section("pareto"), selection)
    grid.run(_picked_cells(study, others, picks, chosen_on_draw(ablation_cells(grid.rows), selection, by="arm"),
                           default_lr))
    pareto = summarise(grid.section("pareto"), ("method", "lr"))
    chosen = ["cure", *strongest_baselines(pareto, default_lr)]
    later = _later_cells(study, seeds, chosen, default_lr)
    grid.total = len(grid.rows) + len(later) + (1 + len(chosen)) * len(seeds) * (study.training_seeds - 1)
    grid.run(later)
    headline = at_chosen(pareto, picks)
    noise = _training_noise(grid, seeds, ("retrain", *chosen), {h["method"]: h["lr"] for h in headline}, default_lr)
    circuits = [discover_circuits(ws, original, ws.forget_set(study.request, seed=s), study.circuits,
                                  progress=grid.progress) for s in seeds]
    labelings = [c.labels for c in circuits]
    sources = group_sources(original, study.request, dict(zip(seeds, labelings)), study.circuits, transfer,
                            grid.progress)
    _transfer(grid, seeds, labelings, sources, default_lr, transfer)
    own_cure = cure_summary([r for r in grid.section("pareto") if r["lr"] == default_lr])
    rows = grid.rows
    return StudyResult(
        study.key(), rows, default_lr, chosen, pareto, headline, noise,
        with_training_noise(rows, headline, chosen, noise),
        summarise(grid.section("rates"), ("request", "method")), summarise(grid.section("levels"), ("request", "method")),
        _reproducibility(grid, seeds, circuits, labelings, own_cure), ablation(rows, selection),
        {section: _transferred(grid, section, labelings, sources, own_cure, transfer) for section in TRANSFER_SECTIONS},
        None if transfer is None else TransferDataset(transfer.data.name, transfer.fingerprint),
        time.perf_counter() - start)


METHODS = (*BASELINES, "cure")  # the Pareto section's methods (and "retrain", the gold standard, beside them)
SWEPT_ARMS = ("npo+pcgrad", "npo+salun", RANDOM_GROUPS)  # the ablation's own arms (npo and cure: the Pareto cells)


def _ablation_cell(study: StudyConfig, arm: str, lr: float, seed: int) -> Cell:
    if arm == RANDOM_GROUPS:
        return Cell("ablation", study.request, "cure", lr, seed, random_groups=0)
    objective, method = arm.split("+")
    return Cell("ablation", study.request, method, lr, seed, objective=objective)


def _sweep_cells(study: StudyConfig, draw: int, default_lr: float) -> list[Cell]:
    """The selection draw: every method and ablation arm at every strength, and the retrain."""
    return ([Cell("pareto", study.request, m, lr, draw) for lr in study.lrs for m in METHODS]
            + [Cell("pareto", study.request, "retrain", default_lr, draw)]
            + [_ablation_cell(study, arm, lr, draw) for lr in study.lrs for arm in SWEPT_ARMS])


def _picked_cells(study: StudyConfig, draws: tuple[int, ...], picks: dict[str, Chosen],
                  arm_picks: dict[str, Chosen], default_lr: float) -> list[Cell]:
    """The draws after the selection draw: each method at the rule's pick and at the default lr (one cell where
    they agree), the retrain, and each ablation arm at its own pick."""
    cells = []
    for s in draws:
        cells += [Cell("pareto", study.request, m, lr, s) for m in METHODS for lr in sorted({picks[m].lr, default_lr})]
        cells.append(Cell("pareto", study.request, "retrain", default_lr, s))
        cells += [_ablation_cell(study, arm, arm_picks[arm].lr, s) for arm in SWEPT_ARMS]
    return cells


def _later_cells(study: StudyConfig, seeds: tuple[int, ...], chosen: list[str], lr: float) -> list[Cell]:
    """Rates and levels (the compared methods) and reproducibility (CURE with groups of another circuit seed)."""
    cells = [Cell("rates", spec, m, lr, s) for spec in study.rates for m in chosen for s in _draws(spec, study)]
    cells += [Cell("levels", spec, m, lr, s) for spec in study.levels for m in chosen for s in _draws(spec, study)]
    cells += [Cell("reproducibility", study.request, "cure", lr, s, study.other_circuit_seed) for s in seeds]
    return cells


def _training_noise(grid: _Grid, seeds: tuple[int, ...], methods: tuple[str, ...], lr_of: dict[str, float],
                    default_lr: float) -> TrainingNoise | None:
    """The original retrained under the other training seeds, each with its own retrains and the headline methods
    at the strengths the rule chose on the own seed; None with one training seed."""
    ws, original, study = grid.ws, grid.original, grid.study
    seed_list = training_seeds(original, study.training_seeds)
    models = {t: reseeded(ws, original, t, grid.progress) for t in seed_list}
    for t in seed_list[1:]:
        grid.run([Cell("training_seeds", study.request, m, lr_of.get(m, default_lr), s, training_seed=t)
                  for s in seeds for m in methods], (ws, models[t]))
    if len(seed_list) < 2:
        return None
    forgets = {s: ws.forget_set(study.request, seed=s) for s in seeds}
    return TrainingNoise(str(forgets[seeds[0]].spec), *noise_identity(ws, original), seed_list, tuple(
        draw_noise(ws, s, forgets[s], models, {t: retrain_for(ws, m, forgets[s], grid.progress)[0]
                                               for t, m in models.items()}, seed_list[0], grid.progress)
        for s in seeds))


def _transfer(grid: _Grid, seeds: tuple[int, ...], labelings: list[dict[str, Group]], sources: list,
              lr: float, transfer: Workspace | None) -> None:
    """CURE on each draw with groups found elsewhere; with a second dataset also the reverse (groups found here
    driving CURE on the other dataset's same request)."""
    study, original = grid.study, grid.original
    grid.total += len(sources)
    grid.run([Cell("transfer", study.request, "cure", lr, src.seed, groups_from=src.label,
                   groups=transferable(src.groups, original) if src.kind == "datasets" else src.groups)
              for src in sources])
    if transfer is not None:
        there = same_recipe_model(transfer, original, grid.progress)
        back = [Cell("transfer_back", study.request, "cure", lr, s) for s in seeds]
        back += [Cell("transfer_back", study.request, "cure", lr, s, groups_from=f"{grid.ws.data.name} draw {s}",
                      groups=transferable(lab, there)) for s, lab in zip(seeds, labelings)]
        grid.total += len(back)
        grid.run(back, (transfer, there))


def _reproducibility(grid: _Grid, seeds: tuple[int, ...], circuits: list, labelings: list[dict[str, Group]],
                     own_cure: Row | None) -> Reproducibility:
    ws, original, study = grid.ws, grid.original, grid.study
    stabilities = [c.stability() for c in circuits]  # relabels every draw: once per circuit
    # after the last cell, with the study's bar full: these ran ~5 min each on the full study without a sign of
    # life (stop 36), so they report their own stages
    other = [discover_circuits(ws, original, ws.forget_set(study.request, seed=s),
                               replace(study.circuits, seed=study.other_circuit_seed), progress=grid.progress).labels
             for s in seeds]
    return Reproducibility(
        [s.jaccard if s else None for s in stabilities], [s.sizes if s else None for s in stabilities],
        group_stability(labelings) if len(labelings) > 1 else None,
        [{g.value: sum(1 for x in lab.values() if x is g) for g in Group} for lab in labelings],
        OtherSeedGroups(same_label_share(labelings, other), own_cure,
                        cure_summary(grid.section("reproducibility"))))


def _transferred(grid: _Grid, section: str, labelings: list[dict[str, Group]], sources: list, own_cure: Row | None,
                 transfer: Workspace | None) -> TransferSection:
    """One transfer section: CURE with its own groups against CURE with groups from elsewhere, or why skipped."""
    kind, why_skipped = TRANSFER_SECTIONS[section]
    used = [src for src in sources if src.kind == kind]
    if not used:
        return TransferSection(skipped=why_skipped)
    original = grid.original
    labels = {src.label for src in used}
    same = same_label_share(labelings, [transferable(src.groups, original) if kind == "datasets" else src.groups
                                        for src in used])
    with_transferred = cure_summary([r for r in grid.section("transfer") if r["groups_from"] in labels])
    if kind != "datasets":
        return TransferSection(None, [src.label for src in used], same, own_cure, with_transferred)
    back = grid.section("transfer_back")
    # the same request's split on both datasets, per node kind (item rows: per dataset, not transferred)
    return TransferSection(
        None, [src.label for src in used], same, own_cure, with_transferred,
        [sizes_by_kind(lab, original) for lab in labelings], [src.sizes for src in used],
        "not transferred: they name each dataset's own items",
        TransferBack(transfer.data.name, grid.ws.data.name, cure_summary([r for r in back if not r["groups_from"]]),
                     cure_summary([r for r in back if r["groups_from"]])))
