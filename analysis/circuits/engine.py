"""What every discovery step shares: the runner over the node table, the request's sides, and draws.

A draw scores one sampling of the request (see scores.py): embedding roles and item rows
on every prompt of each side (`request.input_scores`), heads, MLPs and neurons on a seeded
sample of `n_prompts` per side (the graph attribution, which also gives the edges). With
exact patching as the method, the input part is patched on the sample too (patching
1,700 rows on 14,000 prompts is not on offer).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.forget import ForgetSet
from ..model.recommender import Recommender
from ..model.sequences import PromptBuilder
from ..progress import ProgressFn
from ..workspace import Workspace
from .attribution import Attribution, AttributionConfig, AttributionMethod, attribute
from .corrupt import Corruption, PromptSet, build_prompt_set, user_item_graph
from .coverage import forget_gradient_blocks
from .groups import SideScores
from .request import InputScorer, Presence, input_scores, population_presence, prompt_presence
from .runner import GraphRunner
from .sampling import request_sides
from .scores import PROMPT_SEED, RETAIN_SAMPLE, Draw, NodeGroups, score_parts
from .trace import load_bridge

RETAIN_SEED_OFFSET = 100  # retain-sample draws: seed + 100 + i, apart from the prompt seeds
CORRUPT_SEED_OFFSET = 10_000  # the retain side's counterfactuals: another stream than the forget side's


@dataclass
class DrawWork:
    """A draw with what later steps of a full discovery reuse: the prompt samples and their attribution."""

    draw: Draw
    forget_sample: PromptSet
    retain_sample: PromptSet
    forget_attr: Attribution
    retain_attr: Attribution
    forget_all: PromptSet


def _sample_index(n: int, k: int, seed: int) -> list[int]:
    return sorted(np.random.default_rng(seed).permutation(n)[: min(k, n)].tolist())


class Discovery:
    def __init__(self, ws: Workspace, rec: Recommender, forget: ForgetSet, settings, table,
                 progress: ProgressFn) -> None:
        self.ws, self.rec, self.forget, self.settings, self.progress = ws, rec, forget, settings, progress
        self.table = table
        self.runner = GraphRunner(load_bridge(rec), rec, self.table)
        self.builder = PromptBuilder(rec.fmt, ws.interactions)
        self.graph = user_item_graph(ws.interactions) if settings.corruption in (Corruption.PPR, Corruption.PPR_ITEMS) else None
        self.cfg = AttributionConfig(settings.method, settings.ig_steps, settings.batch_size)
        self.sides = request_sides(ws, forget, settings.null)
        self.replace_target = settings.replaces_target(forget.spec)
        self.scorer = InputScorer(rec)
        self.populations = None
        if self.table.item_rows:
            self.populations = (population_presence(self.runner, self.sides.forget_population),
                                population_presence(self.runner, self.sides.retain_population))
        self.input_cols, self.graph_cols = score_parts(self.table)

    def prompts(self, rows, seed: int) -> PromptSet:
        return build_prompt_set(self.builder, rows, self.settings.corruption, self.graph, seed=seed,
                                replace_target=self.replace_target)

    def input_side_scores(self, prompts: PromptSet, attr: Attribution, stage: str = "request") -> torch.Tensor:
        """(n_prompts, n_roles + n_rows) input scores as the groups compute them: the whole-request
        gradient path, or (exact patching, mean ablation) the sample attribution's own columns."""
        if self.settings.method is AttributionMethod.PATCHING or prompts.corrupt is None:
            return attr.per_prompt[:, self.input_cols]
        method = AttributionMethod.EAP if self.settings.method is AttributionMethod.EAP else AttributionMethod.EAP_IG
        return input_scores(self.runner, self.scorer, prompts, method, self.settings.input_steps,
                            self.settings.input_batch, self.progress, stage)

    def _input_side(self, whole: PromptSet, sample: PromptSet, attr: Attribution, stage: str) -> SideScores:
        on_sample = self.settings.method is AttributionMethod.PATCHING or whole.corrupt is None
        prompts = sample if on_sample else whole
        return SideScores.from_prompts(self.input_side_scores(prompts, attr, stage), prompts.rows["user_id"].to_numpy())

    def _presence(self, forget: PromptSet, retain: PromptSet) -> Presence | None:
        if self.populations is None:
            return None
        return Presence(prompt_presence(self.runner, forget), prompt_presence(self.runner, retain),
                        *self.populations, forget.rows["user_id"].nunique(), retain.rows["user_id"].nunique())

    def _capped(self, prompts: PromptSet, seed: int) -> PromptSet:
        """The side's prompts, or a seeded subset of `request_samples` of them (the graph sample is drawn from it)."""
        cap = self.settings.request_samples
        return prompts if cap is None or len(prompts) <= cap else prompts.subset(_sample_index(len(prompts), cap, seed + 7))

    def draw(self, kind: str, seed: int, first: DrawWork | None = None) -> DrawWork:
        """One draw: a prompt seed (everything resampled) or a retain sample (`first`'s forget side kept)."""
        s = self.settings
        reuse = kind == RETAIN_SAMPLE and first is not None
        f_all = first.forget_all if reuse else self._capped(self.prompts(self.sides.forget_rows, seed), seed)
        r_all = self._capped(self.prompts(self.sides.retain_rows(seed), seed + CORRUPT_SEED_OFFSET), seed)
        f_sample = first.forget_sample if reuse else f_all.subset(_sample_index(len(f_all), s.n_prompts, seed))
        r_sample = r_all.subset(_sample_index(len(r_all), s.n_prompts, seed))
        f_attr = first.forget_attr if reuse else attribute(self.runner, f_sample, self.cfg, self.progress)
        r_attr = attribute(self.runner, r_sample, self.cfg, self.progress)
        f_input = first.draw.forget[0] if reuse else self._input_side(f_all, f_sample, f_attr, "request (forget)")
        r_input = self._input_side(r_all, r_sample, r_attr, "request (retain)")
        patched = s.method is AttributionMethod.PATCHING
        presence = self._presence(f_sample if patched else f_all, r_sample if patched else r_all)
        graph_side = lambda attr, ps: SideScores.from_prompts(attr.per_prompt[:, self.graph_cols],  # noqa: E731
                                                              ps.rows["user_id"].to_numpy())
        draw = Draw(kind, seed, [f_input, first.draw.forget[1] if reuse else graph_side(f_attr, f_sample)],
                    [r_input, graph_side(r_attr, r_sample)], presence)
        return DrawWork(draw, f_sample, r_sample, f_attr, r_attr, f_all)

    def draws(self, first: DrawWork | None = None, prompt_seeds: int = 1, retain_samples: int = 1) -> list[DrawWork]:
        """Draw 0 (or `first`), then prompt-seed draws, then retain-sample draws."""
        s = self.settings
        first = first or self.draw(PROMPT_SEED, s.seed)
        more = [self.draw(PROMPT_SEED, s.seed + i) for i in range(1, prompt_seeds)]
        more += [self.draw(RETAIN_SAMPLE, s.seed + RETAIN_SEED_OFFSET + i, first) for i in range(1, retain_samples)]
        return [first] + more

    def groups(self, works: list[DrawWork], thresholds) -> NodeGroups:
        return NodeGroups.from_table(self.table, [w.draw for w in works], thresholds)

    def coverage(self, f_set: PromptSet) -> dict:
        blocks, total = forget_gradient_blocks(self.rec, self.table, f_set.clean, f_set.labels, self.settings.batch_size)
        return {"blocks": blocks, "total": total}

