"""What a run starts from, apart from the loop itself: a trainable copy of the original, seeded batches of
prompts, the conflict map of a model for a request, and the loss stop's target. Shared by the run
(run.py), the strength sweep and the Conflict view (`cure conflict`); nothing here updates a model.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..circuits.adapter_ownership import adapter_table
from ..circuits.sampling import retain_samples
from ..data.forget import ForgetSet
from ..model.adapters import AdapterConfig, attach, inner, require_backbone
from ..model.objectives import bce, ga_loss, prompt_scores
from ..model.recommender import Recommender
from ..model.sequences import PromptBuilder
from ..workspace import Workspace
from .conflict import ConflictMap, conflict_map, gradients
from .modules import recommender_table

CONFLICT_SAMPLES = 256  # forget and retain samples behind a before/after conflict map


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
        return self._render(rows.iloc[rng.choice(len(rows), size=min(size or self.batch_size, len(rows)), replace=False)])

    def _render(self, picked):
        return self.builder.prompts(picked), torch.tensor(picked["label"].to_numpy())

    def forget_epochs(self):
        """Forget batches that walk the whole forget set in a seeded order, epoch after epoch: (prompts, labels,
        the samples' positions in the forget set)."""
        rows = self.rows["forget"]
        rng = np.random.default_rng(20_000 + self.seed)
        while True:
            order = rng.permutation(len(rows))
            for start in range(0, len(order), self.batch_size):
                picked = order[start : start + self.batch_size]
                yield (*self._render(rows.iloc[picked]), picked)


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


HELD_OUT_SAMPLES = 2000


def held_out_loss(ws: Workspace, original: Recommender, forget: ForgetSet) -> float:
    """The auto stop's target: the original's mean BCE on held-out samples *like* the forget set (the
    forgotten users' or the genre's validation samples; see ForgetSet.held_out).

    Measured on the default model, users:0.1 draw 0: the original's loss on the forgotten users' own
    validation samples (0.516) is *below* its loss on their training samples (0.563): validation samples
    come later in each user's time line and are easier, so the target is met before unlearning starts and
    every method stopped at the first 5-step window, forget AUC moved <= 0.003. Loss is also the wrong
    signal for memorisation here: graddiff took forget log-loss from 0.551 past retrain's 0.586 (to 0.722)
    in those 5 steps while forget AUC moved 0.7766 -> 0.7735 (retrain 0.7431). Hence an option only.
    """
    rows = forget.held_out()
    if len(rows) > HELD_OUT_SAMPLES:
        rows = rows.sample(HELD_OUT_SAMPLES, random_state=0)
    scores = torch.as_tensor(original.score_prompts(PromptBuilder(original.fmt, ws.interactions).prompts(rows)))
    return float(bce(scores.float(), torch.tensor(rows["label"].to_numpy())))


def trainable_copy(original: Recommender, adapter: AdapterConfig | None, neurons: bool = False):
    """A copy of the original to update, its trainable parameters, their node table, and peft's wrapper.

    Full: every parameter, owned as ownership.py says (wrapper None). With an adapter: a fresh
    LoRA adapter's factors (from torch's seed), owned as adapter_ownership.py says, over the
    nodes of the original's own table, so circuit groups found on the original apply as they are.
    """
    require_backbone(adapter, original.meta.get("backbone"), f"{original.path or 'this model'}")
    model = copy.deepcopy(original.model).eval()  # eval: no dropout, so every run is deterministic
    table = recommender_table(original, neurons=neurons)
    if adapter is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return model, dict(model.named_parameters()), table, None
    wrapper = attach(model, adapter)
    model = inner(wrapper).eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return model, params, adapter_table(model, table), wrapper


def conflict_of(ws: Workspace, rec: Recommender, forget: ForgetSet, seed: int = 0,
                adapter: AdapterConfig | None = None) -> ConflictMap:
    """The raw gradient conflict of a model for a deletion request (the heatmap's data); with `adapter`,
    of a fresh adapter's gradients (only B's carry any at the start: B = 0 makes A's vanish)."""
    model, _, table, _ = trainable_copy(rec, adapter)
    return raw_conflict(model, rec, Batches(ws, rec, forget, CONFLICT_SAMPLES, seed), table)
