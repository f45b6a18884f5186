"""Unlearning methods, one spec each: forget objective, second gradient, update rule, options.

As OpenUnlearning keeps one trainer per method, a method here is one `MethodSpec` in
`REGISTRY`: adding one is an entry plus its test. The loop (run.py) is shared: per step
it evaluates the spec's forget objective (descended) and second loss on a forget and a
retain batch, takes their gradients, and asks the spec's rule for the direction.

* ga: -BCE on forget samples, nothing else (unbounded: the budget and the stop matter);
* graddiff: -BCE on forget + BCE on retain;
* npo: negative preference optimisation (bounded) + BCE on retain;
* kl: -BCE on forget + KL to the original on retain samples;
* pcgrad: graddiff with each gradient projected off the other when they conflict;
* salun: graddiff restricted to the parameter elements with the largest |forget gradient|
  (SalUn-style saliency mask, fixed at the start): the non-circuit way to "update only
  what matters", CURE's fair rival;
* cure: NPO + retain BCE with each node's parameters updated by its circuit group's rule;
* selective: CURE's rules on the nodes a user picked;
* retrain: no steps (the exact answer); its entry only states its facts.

Each spec is also where the method's facts live (uses circuits, uses saliency, progress plan, which config
options it reads): the config, the CLI, progress reporting and the app read them from here.

The forget objective is named (`OBJECTIVES`), so a run may swap it (`objective=`) without
a new method. CURE's own is NPO: its formula is not public, and on the default model
(users:0.1, 3 deletion draws, Adam lr 3e-4, one epoch) NPO gave gap closed 0.66 +- 0.17 at a
test-AUC cost of 0.0058, against 0.77 +- 0.23 at 0.0078 for gradient ascent: more forgetting
per unit of utility, and bounded (at lr 1e-3 ascent explodes where NPO over-forgets).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..circuits.groups import Group
from ..circuits.nodes import NodeTable
from ..model.objectives import ga_loss, kl_to_reference, npo_loss
from .methods import (CircuitPlan, Grads, UnlearningMethod, RetainSpecific, Step, parse_unlearning_method, pcgrad,
                      uniform)


@dataclass
class StepContext:
    """What a spec may read at one step (scores carry gradients; `reference` is the frozen original)."""

    model: torch.nn.Module
    reference: torch.nn.Module
    score: Callable  # (model, prompts) -> scores
    forget_prompts: list
    forget_labels: torch.Tensor
    retain_prompts: list
    retain_labels: torch.Tensor
    forget_scores: torch.Tensor
    retain_scores: torch.Tensor
    retain_bce: torch.Tensor
    table: NodeTable
    retain_weight: float = 1.0
    npo_beta: float = 0.5
    groups: dict[str, Group] | None = None
    retain_specific: RetainSpecific = RetainSpecific.FREEZE
    saliency: dict[str, torch.Tensor] | None = None  # salun: {param: bool mask}
    # kept across one run's steps (the loop hands every step the same dict): what a rule fixes once per run,
    # the frozen original's scores of forget samples already seen
    run_memo: dict = field(default_factory=dict)
    forget_rows: np.ndarray | None = None  # the forget batch's positions in the forget set (None: drawn apart)


def bce_ascent(ctx: StepContext) -> torch.Tensor:
    return ga_loss(ctx.forget_scores, ctx.forget_labels)


def reference_forget_scores(ctx: StepContext) -> torch.Tensor:
    """The frozen original's scores of the forget batch, remembered per forget sample for the run: the first
    epoch scores each sample once (the same forward pass as before), later epochs read them."""
    if ctx.forget_rows is None:
        with torch.no_grad():
            return ctx.score(ctx.reference, ctx.forget_prompts)
    memo = ctx.run_memo.setdefault("reference_forget", {})
    rows = [int(r) for r in ctx.forget_rows]
    missing = [i for i, r in enumerate(rows) if r not in memo]
    if missing:
        with torch.no_grad():
            scores = ctx.score(ctx.reference, [ctx.forget_prompts[i] for i in missing])
        memo.update({rows[i]: s for i, s in zip(missing, scores)})
    return torch.stack([memo[r] for r in rows])


def npo_objective(ctx: StepContext) -> torch.Tensor:
    return npo_loss(ctx.forget_scores, reference_forget_scores(ctx), ctx.forget_labels, ctx.npo_beta)


def retain_bce(ctx: StepContext) -> torch.Tensor:
    return ctx.retain_bce


def kl_to_original(ctx: StepContext) -> torch.Tensor:
    with torch.no_grad():
        ref = ctx.score(ctx.reference, ctx.retain_prompts)
    return kl_to_reference(ctx.score(ctx.model, ctx.retain_prompts), ref)


def ascent_only(g_f: Grads, g_second: Grads, ctx: StepContext) -> Step:
    return Step(dict(g_f), g_f, list(ctx.table.owners))


def uniform_rule(g_f: Grads, g_second: Grads, ctx: StepContext) -> Step:
    return uniform(g_f, g_second, ctx.retain_weight, ctx.table)


def pcgrad_rule(g_f: Grads, g_second: Grads, ctx: StepContext) -> Step:
    return pcgrad(g_f, g_second, ctx.retain_weight, ctx.table)


def circuit_rule(g_f: Grads, g_second: Grads, ctx: StepContext) -> Step:
    plan = ctx.run_memo.get("circuit_plan")
    if plan is None:  # the groups are fixed for the run: their per-element coefficients too
        plan = ctx.run_memo["circuit_plan"] = CircuitPlan.build(ctx.table, g_f, ctx.groups or {}, ctx.retain_weight,
                                                                ctx.retain_specific)
    return plan.step(g_f, g_second)


def saliency_rule(g_f: Grads, g_second: Grads, ctx: StepContext) -> Step:
    """graddiff on the salient elements only; every other element is frozen."""
    mask = ctx.saliency
    forget = {n: g_f[n] * mask[n] for n in g_f}
    direction = {n: (g_f[n] + ctx.retain_weight * g_second[n]) * mask[n] for n in g_f}
    updated = ctx.run_memo.get("salient_nodes")
    if updated is None:  # the mask is fixed for the run, and so are the nodes it reaches
        updated = ctx.run_memo["salient_nodes"] = [m for m, slices in ctx.table.owners.items()
                                                   if any(bool(s.of(mask[s.param]).any()) for s in slices)]
    return Step(direction, forget, list(updated))


def saliency_mask(g_f: Grads, fraction: float) -> dict[str, torch.Tensor]:
    """True on the `fraction` of all parameter elements with the largest |g_f| (ties: the threshold's side)."""
    flat = torch.cat([g.abs().reshape(-1) for g in g_f.values()])
    k = max(1, int(round(fraction * flat.numel())))
    threshold = torch.topk(flat, k).values.min()
    masks = {n: g.abs() >= threshold for n, g in g_f.items()}
    # exactly k: drop the surplus elements tied at the threshold (deterministic: first in order)
    surplus = int(sum(int(m.sum()) for m in masks.values())) - k
    for n, m in masks.items():
        if surplus <= 0:
            break
        tied = (g_f[n].abs() == threshold) & m
        drop = torch.nonzero(tied.reshape(-1)).reshape(-1)[:surplus]
        flat_mask = m.reshape(-1)
        flat_mask[drop] = False
        surplus -= len(drop)
    return masks


# The UnlearnConfig fields a method reads besides `method` (names only: run.py imports this module, not the other
# way round; a test checks each is a field). The config's checks and key, the CLI and the app's controls all ask
# the spec, so "which methods take X" is said here and nowhere else.
STEP_OPTIONS = ("epochs", "steps", "lr", "batch_size", "optimizer", "stop", "objective", "npo_beta", "seed", "adapter")
RETAIN_OPTIONS = STEP_OPTIONS + ("retain_weight",)  # a second loss, weighted against the forget objective
CIRCUIT_OPTIONS = RETAIN_OPTIONS + ("retain_specific", "circuits", "thresholds", "groups")


@dataclass(frozen=True)
class MethodSpec:
    """One method: how it steps (objective, second loss, rule; none for retrain) and the facts every caller asks."""

    method: UnlearningMethod
    objective: str | None  # the forget objective's name in OBJECTIVES (descended); None: no steps (retrain)
    second: Callable[[StepContext], torch.Tensor] | None  # the second loss (retain BCE, KL), or none
    rule: Callable[[Grads, Grads, StepContext], Step] | None  # None: no steps (retrain)
    options: tuple[str, ...] = ()  # the UnlearnConfig fields it reads (see STEP_OPTIONS)

    @property
    def steps(self) -> bool:
        """False for retrain: it trains the original's recipe without the forgotten data, no unlearning step."""
        return self.rule is not None

    @property
    def uses_circuits(self) -> bool:
        """Its rule reads circuit groups: the run discovers (or is given) them first."""
        return "circuits" in self.options

    @property
    def uses_saliency(self) -> bool:
        return "saliency" in self.options

    @property
    def plan(self) -> str:
        """Its progress plan: a name in progress.PLANS, not the stages themselves, since the measured stage costs
        (cache/timings.json) are stored under that name and a plan passed as stages would not keep them."""
        if not self.steps:
            return "retrain"
        return "unlearn" if self.uses_circuits else "unlearn-baseline"


OBJECTIVES: dict[str, Callable[[StepContext], torch.Tensor]] = {"ascent": bce_ascent, "npo": npo_objective}

REGISTRY: dict[UnlearningMethod, MethodSpec] = {spec.method: spec for spec in (
    # the exact answer, the lab's judge: it reads none of the config (lab.retrain_for trains the original's recipe)
    MethodSpec(UnlearningMethod.RETRAIN, None, None, None),
    MethodSpec(UnlearningMethod.GA, "ascent", None, ascent_only, STEP_OPTIONS),  # ascent_only has no retain weight
    MethodSpec(UnlearningMethod.GRADDIFF, "ascent", retain_bce, uniform_rule, RETAIN_OPTIONS),
    MethodSpec(UnlearningMethod.NPO, "npo", retain_bce, uniform_rule, RETAIN_OPTIONS),
    MethodSpec(UnlearningMethod.KL, "ascent", kl_to_original, uniform_rule, RETAIN_OPTIONS),
    MethodSpec(UnlearningMethod.PCGRAD, "ascent", retain_bce, pcgrad_rule, RETAIN_OPTIONS),
    MethodSpec(UnlearningMethod.SALUN, "ascent", retain_bce, saliency_rule, RETAIN_OPTIONS + ("saliency",)),
    # random_groups: the ablation of CURE's circuit (ablation.py); selective's groups are the user's modules
    MethodSpec(UnlearningMethod.CURE, "npo", retain_bce, circuit_rule, CIRCUIT_OPTIONS + ("random_groups",)),
    MethodSpec(UnlearningMethod.SELECTIVE, "npo", retain_bce, circuit_rule, CIRCUIT_OPTIONS + ("modules",)),
)}


def spec_of(method: UnlearningMethod | str) -> MethodSpec:
    """Any method's spec, retrain's included (its facts: circuits, saliency, progress plan, options)."""
    return REGISTRY[parse_unlearning_method(method)]


def step_spec_of(method: UnlearningMethod | str) -> MethodSpec:
    """The spec of a method that takes unlearning steps (the loop's)."""
    spec = spec_of(method)
    if not spec.steps:
        raise ValueError(f"{spec.method.value} is not a step method (retrain trains from scratch)")
    return spec
