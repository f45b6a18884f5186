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

import numpy as np
from scipy.stats import bootstrap

from ..circuits.discover import CircuitSettings, discover_circuits
from ..circuits.groups import Group, group_stability
from ..data.forget import parse_forget_spec
from ..model.recommender import Recommender
from ..progress import ProgressFn, or_silent
from ..pareto import rank_runs
from ..unlearn.attack import AttackResult
from ..unlearn.lab import unlearn
from ..unlearn.strength import StrengthPoint, choose_strength
from ..unlearn.run import UnlearnConfig
from ..workspace import Workspace
from .executors import CellJob, LocalExecutor
from .transfer import (NO_SECOND_DATASET, ONE_DRAW, group_sources, planned, same_label_share, same_recipe_model,
                       sizes_by_kind, transferable)

BASELINES = ("ga", "graddiff", "npo", "kl", "pcgrad", "salun")
METRICS = ("jsd_forget", "jsd_test", "auc_test", "auc_forget", "mia_auc", "auc_valid", "auc_forget_unseen",
           "mia_never_seen_auc", "mia_never_seen_valid_auc")
# against doing nothing and retrain (yardstick.py); retrain distance ranks, signed gap closed beside it
RELATIVE = ("retrain_distance", "gap_closed", "jsd_ratio", "utility_cost")


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

    @classmethod
    def quick(cls) -> "StudyConfig":
        """One seed, one strength and fewer cells, for a first look within 15 minutes on 2 cores.

        Measured cold (only the default model cached): 17.7 min with two strengths and 128
        circuit prompts, of which 4 retrains took 4.8 min and scoring each model ~12 s; one
        strength and 64 prompts drop 6 runs and half of each circuit discovery. With Adam and
        half an epoch per run (issue 12) it took 15 min 46 s, 24 cells; the rates section's
        users:0.05 (its own retrain and 3 runs) is left to the full study.
        """
        return cls(seeds=(0,), lrs=(3e-4,), rates=("users:0.1",),
                   levels=("users:0.1", "interactions:0.05", "genre:Horror"), epochs=0.5,
                   circuits=CircuitSettings(n_prompts=64, stability_seeds=2))

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

    def config(self, study: StudyConfig) -> UnlearnConfig:
        circuits = replace(study.circuits, seed=self.circuit_seed)
        return UnlearnConfig(method=self.method, lr=self.lr, epochs=study.epochs, steps=study.steps, circuits=circuits,
                             groups=tuple((m, g.value) for m, g in self.groups.items()),
                             random_groups=self.random_groups)


def _run_cell(ws: Workspace, original: Recommender, cell: Cell, study: StudyConfig, progress: ProgressFn) -> dict:
    run = unlearn(ws, original, ws.forget_set(cell.request, seed=cell.seed), cell.config(study), progress)
    relative = {"gap_closed": (run["metrics"].get("gap_closed") or {}).get("auc_forget"),
                "retrain_distance": run["metrics"].get("retrain_distance"),
                "jsd_ratio": run["metrics"].get("jsd_ratio"), "utility_cost": run["metrics"].get("utility_cost")}
    valid_attack = run["metrics"].get("mia_never_seen_valid") or {}
    row = {**{k: v for k, v in asdict(cell).items() if k != "groups"}, **{m: run["metrics"].get(m) for m in METRICS},
           "mia_never_seen_valid_low": (valid_attack.get("interval") or {}).get("run", [None, None])[0],
           "original_mia_never_seen_valid_low": (valid_attack.get("interval") or {}).get("original", [None, None])[0],
           **relative, "valid_drop": run["original"]["auc_valid"] - run["metrics"]["auc_valid"],
           **{f"retrain_{m}": run["retrain"].get(m) for m in METRICS},
           **{f"original_{m}": run["original"].get(m) for m in METRICS},  # "do nothing", the bar to clear
           "seconds": run["seconds"], "retrain_seconds": run["retrain_seconds"],
           "applied_conflict": (run["conflict"] or {}).get("applied", {}).get("negative_share"),
           "run_dir": run["run_dir"]}
    return row


def summarise(rows: list[dict], by: tuple[str, ...]) -> list[dict]:
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


def _draws(spec: str, study: StudyConfig) -> tuple[int, ...]:
    """The deletion draws of a request: one for a deterministic one (a genre), whose spread is then 0 over n=1."""
    return study.seeds if parse_forget_spec(spec).is_random else study.seeds[:1]


def _cure_summary(rows: list[dict]) -> dict | None:
    found = summarise([r for r in rows if r["method"] == "cure"], ("method",))
    return found[0] if found else None


def paired_difference(a: list[dict], b: list[dict], key: str) -> dict:
    """Mean of a - b over the deletion draws both ran, with a 95% bootstrap interval (scipy) from 3 draws on."""
    other = {r["seed"]: r[key] for r in b if r.get(key) is not None}
    diffs = [r[key] - other[r["seed"]] for r in a if r.get(key) is not None and r["seed"] in other]
    out = {"mean": float(np.mean(diffs)) if diffs else None, "n_draws": len(diffs), "low": None, "high": None}
    if len(diffs) >= 3 and np.ptp(diffs) > 0:
        ci = bootstrap((np.array(diffs),), np.mean, n_resamples=2000, method="percentile",
                       rng=np.random.default_rng(0)).confidence_interval
        out.update(low=float(ci.low), high=float(ci.high))
    return out


ABLATION_KEYS = ("retrain_distance", "utility_cost", "mia_never_seen_auc")


def ablation(rows: list[dict], lr: float) -> dict:
    """CURE against CURE with random groups (same sizes per node kind) and against uniform NPO, at one lr, paired
    by deletion draw: does the circuit matter, and does the rule beat the plain objective?"""
    pick = lambda section, method: [r for r in rows if r["section"] == section and r["method"] == method  # noqa: E731
                                    and r["lr"] == lr]
    cure, npo, rand = pick("pareto", "cure"), pick("pareto", "npo"), pick("ablation", "cure")
    return {"lr": lr, "cure": _cure_summary(cure), "cure_random_groups": _cure_summary(rand),
            "npo": (summarise(npo, ("method",)) or [None])[0],
            "cure_minus_random": {k: paired_difference(cure, rand, k) for k in ABLATION_KEYS},
            "cure_minus_npo": {k: paired_difference(cure, npo, k) for k in ABLATION_KEYS}}


def strongest_baselines(summary: list[dict], lr: float, n: int = 2) -> list[str]:
    """The baselines nearest the retrain at the given lr: ranked by retrain distance and utility cost (means),
    so a baseline that overshoots the retrain does not outrank one that lands on it."""
    at = [s for s in summary if s["method"] in BASELINES and s["lr"] == lr]
    order = rank_runs([s["retrain_distance"] for s in at], [s["utility_cost"] or 0.0 for s in at])
    return [at[i]["method"] for i in order[:n]]


def chosen_by_attack(summary: list[dict]) -> list[dict]:
    """Per method, the summary row at the strength the retrain-free rule picks (strength.choose_strength: the
    weakest lr whose forgotten users are indistinguishable from never-seen users on validation-period
    samples, mean over draws); reads neither the retrain nor the test set. Methods without the attack (an
    interaction-level request) fall back to the weakest lr."""
    out = []
    for method in dict.fromkeys(s["method"] for s in summary):
        mine = sorted((s for s in summary if s["method"] == method), key=lambda s: s["lr"])
        usable = [s for s in mine if s.get("mia_never_seen_valid_auc") is not None]
        if not usable or method == "retrain":
            out.append({**mine[0], "chosen_by": "weakest (no attack)" if method != "retrain" else "retrain"})
            continue
        first = usable[0]
        before = (AttackResult.from_record(first["original_mia_never_seen_valid_auc"],
                                           first.get("original_mia_never_seen_valid_low"))
                  if first.get("original_mia_never_seen_valid_auc") is not None else None)
        choice = choose_strength([StrengthPoint(s["lr"], AttackResult.from_record(
            s["mia_never_seen_valid_auc"], s.get("mia_never_seen_valid_low"))) for s in usable], before)
        out.append({**next(s for s in usable if s["lr"] == choice.strength), "chosen_by": choice.reason})
    return out


def run_study(ws: Workspace, original: Recommender, study: StudyConfig, progress: ProgressFn | None = None,
              transfer: Workspace | None = None, executor=None) -> dict:
    """Run (or load) every cell; returns the rows and each section's summary.

    `executor` (executors.py): where cells run, one after another here (default) or as Ray tasks."""
    progress = or_silent(progress)
    executor = executor or LocalExecutor()
    start = time.perf_counter()
    default_lr = UnlearnConfig.lr if UnlearnConfig.lr in study.lrs else study.lrs[0]
    seeds = _draws(study.request, study)  # the Pareto, reproducibility and transfer sections' draws
    pareto_cells = [Cell("pareto", study.request, m, lr, s) for s in seeds for lr in study.lrs
                    for m in (*BASELINES, "cure")] + [Cell("pareto", study.request, "retrain", default_lr, s)
                                                       for s in seeds]
    rows: list[dict] = []
    done = 0

    def run_all(cells: list[Cell], total: int, on: tuple[Workspace, Recommender] | None = None) -> list[dict]:
        data, model = on or (ws, original)

        def one_done() -> None:
            nonlocal done
            done += 1
            progress("study", done, total)
        return executor.run([CellJob(data, model, cell, study) for cell in cells], _run_cell, progress, one_done)

    # the grid's size is known only after the Pareto section picks the two strongest baselines
    estimate = len(pareto_cells) + planned(seeds, transfer) + 2 * len(seeds) + 3 * sum(
        len(_draws(spec, study)) for spec in (*study.rates, *study.levels))
    rows += run_all(pareto_cells, estimate)
    pareto = summarise([r for r in rows if r["section"] == "pareto"], ("method", "lr"))
    chosen = ["cure", *strongest_baselines(pareto, default_lr)]
    later = [Cell("rates", spec, m, default_lr, s) for spec in study.rates for m in chosen for s in _draws(spec, study)]
    later += [Cell("levels", spec, m, default_lr, s) for spec in study.levels for m in chosen
              for s in _draws(spec, study)]
    later += [Cell("reproducibility", study.request, "cure", default_lr, s, study.other_circuit_seed)
              for s in seeds]
    later += [Cell("ablation", study.request, "cure", default_lr, s, random_groups=0) for s in seeds]
    total = len(pareto_cells) + len(later)
    rows += run_all(later, total)

    circuits = [discover_circuits(ws, original, ws.forget_set(study.request, seed=s), study.circuits)
                for s in seeds]
    labelings = [c.labels for c in circuits]
    sources = group_sources(original, study.request, dict(zip(seeds, labelings)), study.circuits, transfer, progress)
    total += len(sources)
    rows += run_all([Cell("transfer", study.request, "cure", default_lr, src.seed, groups_from=src.label,
                          groups=transferable(src.groups, original) if src.kind == "datasets" else src.groups)
                     for src in sources], total)
    if transfer is not None:  # the reverse: groups found here drive CURE on the other dataset's same request
        there = same_recipe_model(transfer, original, progress)
        back = [Cell("transfer_back", study.request, "cure", default_lr, s) for s in seeds]
        back += [Cell("transfer_back", study.request, "cure", default_lr, s, groups_from=f"{ws.data.name} draw {s}",
                      groups=transferable(lab, there)) for s, lab in zip(seeds, labelings)]
        total += len(back)
        rows += run_all(back, total, (transfer, there))

    other = [discover_circuits(ws, original, ws.forget_set(study.request, seed=s),
                               replace(study.circuits, seed=study.other_circuit_seed)).labels for s in seeds]
    own_cure = _cure_summary([r for r in rows if r["section"] == "pareto" and r["lr"] == default_lr])
    reproducibility = {
        "prompt_seeds": [(c.stability() or {}).get("jaccard") for c in circuits],
        "prompt_seed_sizes": [(c.stability() or {}).get("sizes") for c in circuits],
        "deletion_draws": group_stability(labelings) if len(labelings) > 1 else None,
        "group_sizes": [{g.value: sum(1 for x in lab.values() if x is g) for g in Group} for lab in labelings],
        "groups_from_other_circuit_seed": {
            "same_groups": same_label_share(labelings, other),
            "cure_with_own_groups": own_cure,
            "cure_with_other_groups": _cure_summary([r for r in rows if r["section"] == "reproducibility"])},
    }

    def transferred(kind: str, why_skipped: str) -> dict:
        used = [src for src in sources if src.kind == kind]
        if not used:
            return {"skipped": why_skipped}
        out = {"groups_from": [src.label for src in used],
               "same_groups": same_label_share(labelings, [transferable(src.groups, original)
                                                            if kind == "datasets" else src.groups for src in used]),
               "cure_with_own_groups": own_cure,
               "cure_with_transferred_groups": _cure_summary(
                   [r for r in rows if r["section"] == "transfer" and r["groups_from"] in {s.label for s in used}])}
        if kind == "datasets":  # the same request's split on both datasets, per node kind (item rows: per
            out["sizes_here"] = [sizes_by_kind(lab, original) for lab in labelings]  # dataset, not transferred)
            out["sizes_there"] = [src.sizes for src in used]
            out["item_rows"] = "not transferred: they name each dataset's own items"
            back = [r for r in rows if r["section"] == "transfer_back"]
            out["back"] = {"on": transfer.data.name, "groups_from": ws.data.name,
                           "cure_with_own_groups": _cure_summary([r for r in back if not r["groups_from"]]),
                           "cure_with_transferred_groups": _cure_summary([r for r in back if r["groups_from"]])}
        return out

    return {
        "config": study.key(), "rows": rows, "default_lr": default_lr, "compared_methods": chosen,
        "pareto": pareto, "headline": chosen_by_attack(pareto),
        "rates": summarise([r for r in rows if r["section"] == "rates"], ("request", "method")),
        "levels": summarise([r for r in rows if r["section"] == "levels"], ("request", "method")),
        "reproducibility": reproducibility,
        "ablation": ablation(rows, default_lr),
        "transfer": {"across_draws": transferred("draws", ONE_DRAW),
                     "across_datasets": transferred("datasets", NO_SECOND_DATASET)},
        "transfer_dataset": None if transfer is None else {"name": transfer.data.name,
                                                           "fingerprint": transfer.fingerprint},
        "seconds": time.perf_counter() - start,
    }
