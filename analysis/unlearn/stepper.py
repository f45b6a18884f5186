"""One unlearning step, as every method takes it: a forward pass on a forget and a retain batch, the backward
passes the method's rule needs, the rule, the optimiser's update, and the conflict maps of what was applied.

`run.unlearn_steps` owns the loop around it (batches, the stops, the curves); what a step reads is fixed at the
start of a run and held by a `Stepper`. Each part runs under the run's StageClock, so bench_speed can say where a
step's time goes (forward, forget objective, backward, rule, optimiser, conflict maps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..circuits.groups import Group
from ..circuits.nodes import NodeTable
from ..clock import StageClock
from ..errors import TrainingError
from ..model.objectives import bce
from .conflict import ConflictMap, conflict_maps, gradients
from .methods import RetainSpecific, Step
from .registry import MethodSpec, StepContext, retain_bce

EXPLODING = 1e3  # a loss above this (or not finite) stops the run: nothing of it is stored


def check_loss(name: str, loss: torch.Tensor, step: int) -> float:
    value = float(loss.detach())
    if not math.isfinite(value) or abs(value) > EXPLODING:
        raise TrainingError(f"{name} loss is {value} at step {step}: the run stopped and nothing was stored")
    return value


@dataclass(frozen=True)
class StepSettings:
    """The parts of a run's configuration a step's losses read."""
    lr: float
    retain_weight: float
    npo_beta: float
    retain_specific: RetainSpecific


@dataclass(frozen=True)
class StepOutcome:
    """What one step measured: its losses, the rule's choice, and the three conflict maps (this method's raw
    forget gradient, the rule's forget part, and the parameter change actually applied, each against the retain
    gradient; the last over the nodes that moved)."""
    forget_bce: float
    retain_bce: float
    forget_objective: float
    chosen: Step
    raw: ConflictMap
    applied: ConflictMap
    update: ConflictMap

    def curve_row(self, step: int, target: float | None, attack: float | None) -> dict:
        return {"step": step + 1, "forget_bce": self.forget_bce, "retain_bce": self.retain_bce,
                "forget_objective": self.forget_objective, "applied_negative_share": self.applied.negative_share,
                "update_negative_share": self.update.negative_share, "raw_negative_share": self.raw.negative_share,
                "updated_modules": len(self.chosen.updated), "stop_target": target, "stop_attack": attack}


@dataclass
class Stepper:
    model: torch.nn.Module
    params: dict[str, torch.nn.Parameter]
    reference: torch.nn.Module  # the frozen original (NPO's reference pass, KL's teacher)
    score: Callable
    table: NodeTable
    settings: StepSettings
    spec: MethodSpec
    objective: Callable[[StepContext], torch.Tensor]  # the forget objective
    groups: dict[str, Group] | None  # the circuit's groups, for the rules that read them
    saliency: dict[str, torch.Tensor] | None
    optimizer: torch.optim.Optimizer | None  # None: plain gradient steps of size lr
    clock: StageClock
    memo: dict = field(default_factory=dict)  # the run's memo (StepContext.run_memo)

    def context(self, fp, fl, rp, rl, forget_rows: np.ndarray | None = None) -> StepContext:
        f_scores = self.score(self.model, fp)
        r_scores = self.score(self.model, rp) if len(rp) else torch.zeros(0)
        s = self.settings
        return StepContext(self.model, self.reference, self.score, fp, fl, rp, rl, f_scores, r_scores,
                           bce(r_scores, rl) if len(rp) else torch.tensor(0.0), self.table, s.retain_weight,
                           s.npo_beta, self.groups, s.retain_specific, self.saliency, self.memo, forget_rows)

    def step(self, step: int, fp, fl, rp, rl, forget_rows: np.ndarray) -> StepOutcome:
        clock, model = self.clock, self.model
        with clock("forward"):
            ctx = self.context(fp, fl, rp, rl, forget_rows)
        with clock("forget objective"):  # NPO's reference pass on the frozen original is here
            forget_bce = bce(ctx.forget_scores, fl)
            forget_obj = self.objective(ctx)
            check_loss("forget", forget_obj, step)
            check_loss("retain", ctx.retain_bce, step)
        with clock("backward"):
            g_f = gradients(model, forget_obj)
            g_r = gradients(model, ctx.retain_bce)
            if self.spec.second is None or self.spec.second is retain_bce:
                g_second = g_r
            else:
                second = self.spec.second(ctx)
                check_loss("second", second, step)
                g_second = gradients(model, second)
        with clock("rule"):
            chosen: Step = self.spec.rule(g_f, g_second, ctx)
        with clock("optimiser"):
            change = self._apply(chosen.direction)
        with clock("conflict maps"):
            # the parameter change actually applied, against the retain gradient: > 0 cosine between
            # -change and g_r means the step lowers the retain loss to first order. Raw: this method's forget
            # objective vs retain; applied: the rule's forget part (neither is touched by the optimiser step)
            raw, applied, update = conflict_maps(self.table, g_r, [g_f, chosen.forget_part, change],
                                                 [None, chosen.updated, chosen.updated])
        return StepOutcome(float(forget_bce.detach()), float(ctx.retain_bce.detach()), float(forget_obj.detach()),
                           chosen, raw, applied, update.moved())

    def _apply(self, direction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move the parameters along -direction (plain steps of size lr, or through the optimiser); returns the
        change applied (before - after)."""
        old = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            if self.optimizer is None:
                for name, p in self.params.items():
                    p -= self.settings.lr * direction[name]
            else:
                for name, p in self.params.items():
                    p.grad = direction[name]
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        return {n: old[n] - p.detach() for n, p in self.params.items()}
