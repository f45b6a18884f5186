"""One unlearning run: a copy of the original model, a step budget, a rule; stored under cache/runs/.

Every method shares the loop: per step one forget batch and one retain batch (seeded),
the gradients the rule needs, plain SGD on the rule's direction (so the applied update is
exactly lr x direction and its conflict can be measured), and a stop with TrainingError
on a non-finite or exploding loss. The original model is deep-copied, never touched, and
a run is only visible in the cache once it is complete.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from ..circuits.discover import CircuitSettings, retain_samples
from ..circuits.groups import Group, GroupThresholds
from ..data.forget import ForgetSet
from ..errors import SettingsError, TrainingError
from ..model.recommender import Recommender
from ..model.sequences import PromptBuilder
from ..progress import ProgressFn, or_silent
from ..workspace import Workspace
from .conflict import ConflictMap, conflict_map, gradients, is_conflict
from .methods import RULES, Method, RetainSpecific, Step, circuit_rules, parse_method
from .modules import parse_modules, recommender_table
from .objectives import bce, ga_loss, kl_to_reference, npo_loss, prompt_scores

RUN = "run.json"
MODEL = "model"
EXPLODING = 1e3
CONFLICT_SAMPLES = 256  # forget and retain samples behind a before/after conflict map


@dataclass(frozen=True)
class UnlearnConfig:
    method: Method = Method.CURE
    steps: int = 30
    lr: float = 0.003  # SGD; at 0.01 gradient ascent already wrecks the default model (test AUC 0.27)
    batch_size: int = 64
    retain_weight: float = 1.0
    npo_beta: float = 0.5
    modules: tuple[str, ...] = ()  # selective: the modules to update
    retain_specific: RetainSpecific = RetainSpecific.FREEZE
    seed: int = 0
    circuits: CircuitSettings = field(default_factory=CircuitSettings)
    thresholds: GroupThresholds = field(default_factory=GroupThresholds)
    # (module, group) pairs found elsewhere (another dataset or deletion draw): when given,
    # CURE and selective use them instead of discovering circuits on this request
    groups: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse_method(self.method))
        object.__setattr__(self, "retain_specific", RetainSpecific(self.retain_specific))
        object.__setattr__(self, "modules", tuple(self.modules))
        pairs = self.groups.items() if isinstance(self.groups, dict) else self.groups
        try:
            object.__setattr__(self, "groups", tuple(sorted((str(m), Group(g).value) for m, g in pairs)))
        except ValueError as e:
            raise SettingsError(f"unknown circuit group in given groups: {e}; use {[g.value for g in Group]}") from e
        if self.groups and not self.uses_circuits:
            raise SettingsError(f"given circuit groups only apply to cure and selective, not {self.method.value}")
        if self.steps < 1 or self.batch_size < 1:
            raise SettingsError("steps and batch_size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SettingsError(f"the learning rate must be a positive number, got {self.lr}")
        if self.method is Method.SELECTIVE and not self.modules:
            raise SettingsError("selective unlearning needs --modules (e.g. a0.h1,m2)")

    @property
    def uses_circuits(self) -> bool:
        return self.method in (Method.CURE, Method.SELECTIVE)

    @property
    def given_groups(self) -> dict[str, Group]:
        return {m: Group(g) for m, g in self.groups}

    def key(self) -> dict:
        # `groups` enters the key only when given, so runs stored before it existed keep their keys
        d = {k: v for k, v in asdict(self).items() if k not in ("circuits", "thresholds", "groups")}
        d["method"], d["retain_specific"] = self.method.value, self.retain_specific.value
        if self.groups:
            d["groups"] = [list(pair) for pair in self.groups]
        elif self.uses_circuits:
            d["circuits"], d["thresholds"] = self.circuits.key(), self.thresholds.as_dict()
        return d


class Batches:
    """Seeded forget and retain batches of canonical prompts (rendered when drawn)."""

    def __init__(self, ws: Workspace, rec: Recommender, forget: ForgetSet, batch_size: int, seed: int) -> None:
        self.builder = PromptBuilder(rec.fmt, ws.interactions)
        self.batch_size = batch_size
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.rows = {"forget": forget.forget_samples, "retain": retain_samples(ws, forget)}

    def draw(self, side: str, size: int | None = None, rng: np.random.Generator | None = None):
        rows = self.rows[side]
        rng = rng or self.rng
        picked = rows.iloc[rng.choice(len(rows), size=min(size or self.batch_size, len(rows)), replace=False)]
        return self.builder.prompts(picked), torch.tensor(picked["label"].to_numpy())


def _groups_for(cfg: UnlearnConfig, labels: dict[str, Group], known) -> dict[str, Group]:
    if cfg.method is Method.CURE:
        return labels
    chosen = parse_modules(list(cfg.modules), known)
    # selective: only the named modules move; a named module the circuit calls inactive or
    # retain-specific is updated like a task-shared one, since the caller asked for it
    groups = {m: (labels.get(m) if labels.get(m) in (Group.FORGET, Group.SHARED) else Group.SHARED) for m in chosen}
    return {"logits": Group.INACTIVE, **groups}  # only what was named moves


def _check_given(given: dict[str, Group], known) -> None:
    """Groups found on another model must name this model's roles, heads and MLPs (same architecture).

    Item rows are per dataset: rows this model lacks are ignored, rows not given stay inactive.
    """
    rows = set(known.item_rows)
    graph_nodes = [n for n in known.scored if n not in rows]
    missing = sorted(set(graph_nodes) - set(given))
    extra = sorted(n for n in set(given) - set(known.scored) if not n.startswith("row:"))
    if missing or extra:
        raise SettingsError(f"the given circuit groups come from a model with other modules "
                            f"(missing here: {missing[:4]}, unknown here: {extra[:4]}); transfer needs the same "
                            f"architecture")


def _check(name: str, loss: torch.Tensor, step: int) -> float:
    value = float(loss.detach())
    if not math.isfinite(value) or abs(value) > EXPLODING:
        raise TrainingError(f"{name} loss is {value} at step {step}: the run stopped and nothing was stored")
    return value


def raw_conflict(model, rec: Recommender, batches: Batches, table) -> ConflictMap:
    """cos(g_forget, g_retain) per module, g_forget from the forget objective of GA (-BCE).

    The samples come from their own seed, so before, after and any model compare on the
    same prompts.
    """
    rng = np.random.default_rng(10_000 + batches.seed)
    fp, fl = batches.draw("forget", CONFLICT_SAMPLES, rng)
    rp, rl = batches.draw("retain", CONFLICT_SAMPLES, rng)
    score = lambda p: prompt_scores(model, p, rec.pad_id, rec.fmt.yes_id, rec.fmt.no_id)  # noqa: E731
    g_f = gradients(model, ga_loss(score(fp), fl))
    g_r = gradients(model, bce(score(rp), rl))
    return conflict_map(table, g_f, g_r)


def unlearn_steps(ws: Workspace, original: Recommender, forget: ForgetSet, cfg: UnlearnConfig,
                  groups: dict[str, Group] | None, progress: ProgressFn | None = None,
                  on_step: Callable[[dict], None] | None = None) -> dict:
    """Run the budget on a copy of the original; returns the model and everything measured."""
    progress = or_silent(progress)
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(original.model).eval()  # eval: no dropout, so every run is deterministic
    for p in model.parameters():
        p.requires_grad_(True)
    reference = original.model.eval()
    table = recommender_table(original, neurons=cfg.uses_circuits and cfg.circuits.granularity == "neurons")
    batches = Batches(ws, original, forget, cfg.batch_size, cfg.seed)
    score = lambda m, p: prompt_scores(m, p, original.pad_id, original.fmt.yes_id, original.fmt.no_id)  # noqa: E731
    before = raw_conflict(model, original, batches, table)
    if cfg.groups:  # found on another model: it must have the same modules
        _check_given(groups or {}, table)
    rule_groups = _groups_for(cfg, groups or {}, table) if cfg.uses_circuits else None

    curves: list[dict] = []
    applied_cos: list[float] = []
    rules: dict[str, str] = {}
    start = time.perf_counter()
    for step in range(cfg.steps):
        fp, fl = batches.draw("forget")
        rp, rl = batches.draw("retain")
        f_scores, r_scores = score(model, fp), score(model, rp)
        forget_bce, retain_bce = bce(f_scores, fl), bce(r_scores, rl)
        if cfg.method is Method.NPO:
            with torch.no_grad():
                ref_f = score(reference, fp)
            forget_obj = npo_loss(f_scores, ref_f, fl, cfg.npo_beta)
        else:
            forget_obj = -forget_bce
        _check("forget", forget_obj, step)
        _check("retain", retain_bce, step)
        g_f = gradients(model, forget_obj)
        g_r = gradients(model, retain_bce)
        if cfg.method is Method.KL:
            with torch.no_grad():
                ref_r = score(reference, rp)
            kl = kl_to_reference(score(model, rp), ref_r)
            _check("kl", kl, step)
            g_second = gradients(model, kl)
        else:
            g_second = g_r
        if cfg.method is Method.GA:
            chosen: Step = RULES[Method.GA](g_f, g_second, 0.0, table)
        elif cfg.uses_circuits:
            chosen = circuit_rules(g_f, g_second, cfg.retain_weight, table, rule_groups, cfg.retain_specific)
            rules = chosen.rules
        else:
            chosen = RULES[cfg.method](g_f, g_second, cfg.retain_weight, table)
        applied = conflict_map(table, chosen.forget_part, g_r, chosen.updated)
        raw = conflict_map(table, g_f, g_r)  # during the run: this method's forget objective vs retain
        applied_cos += applied.cos
        with torch.no_grad():
            for name, p in model.named_parameters():
                p -= cfg.lr * chosen.direction[name]
        curves.append({"step": step + 1, "forget_bce": float(forget_bce.detach()), "retain_bce": float(retain_bce.detach()),
                       "forget_objective": float(forget_obj.detach()), "applied_negative_share": applied.negative_share,
                       "raw_negative_share": raw.negative_share,
                       "updated_modules": len(chosen.updated)})
        if on_step:
            on_step(curves[-1])
        progress("unlearn", step + 1, cfg.steps)
    seconds = time.perf_counter() - start
    after = raw_conflict(model, original, batches, table)
    n = len(applied_cos)
    return {"model": model, "seconds": seconds, "curves": curves, "rules": rules,
            "conflict": {"before": before.to_json(), "after": after.to_json(),
                         "applied": {"negative_share": sum(map(is_conflict, applied_cos)) / n if n else float("nan"),
                                     "mean_cos": float(np.mean(applied_cos)) if n else float("nan"),
                                     "module_steps": n}}}


def conflict_of(ws: Workspace, rec: Recommender, forget: ForgetSet, seed: int = 0) -> ConflictMap:
    """The raw gradient conflict of a model for a deletion request (the heatmap's data)."""
    model = copy.deepcopy(rec.model).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return raw_conflict(model, rec, Batches(ws, rec, forget, CONFLICT_SAMPLES, seed), recommender_table(rec))
