"""Scoring the whole deletion request at the input: embedding roles and item rows on every prompt.

Item rows and roles are input splits: a position's score is (clean - corrupt input) ·
dM/d(input there), and the input feeds every downstream node through the residual stream,
so dM/d(input) is the sum over readers that the graph runner's `input_grads` adds up
node by node through TransformerLens hooks. Here it is one gradient of the Hugging Face
model with respect to its input embeddings: one forward and one backward per batch and IG
step, no per-head residual copies, no full-vocabulary logits. Measured on the default
model (26-token prompts, 2 cores): the per-reader path costs 2.75 s per 1,024 prompts and
IG step, this one 2.1 s; a fwd+bwd is compute-bound at ~80 GFLOP/s, so the whole request
of users:0.1 (7,344 forget samples and as many retain ones) costs ~30 s per IG step.
`tests/test_request.py` checks it equals the graph runner's input split (two
implementations, TransformerLens hooks vs plain HF) to float tolerance, EAP and EAP-IG.

Presence: which item rows occur (history or target) in which users' prompts, the
occurrence counts that tell a row's share means anything, and which items the whole
retained population rated at all (a row nobody retained ever touches is forget-only by
presence, not "used differently").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..progress import ProgressFn, or_silent
from ..model.recommender import Recommender
from ..model.sequences import pad_batch
from .attribution import Batch, AttributionMethod, position_codes, split_input
from .corrupt import PromptSet
from .runner import GraphRunner


class InputScorer:
    """The metric as a function of the token embeddings, on the Hugging Face model itself.

    Only the Yes/No logits at each prompt's answer position are computed (the full-vocabulary
    unembedding at every position cost ~30% of a forward-backward on the default model), and the
    clean and counterfactual embeddings are table look-ups, not forward passes. The model's own
    position handling (learned positions, rotary) applies as usual: positions are the same in both
    prompts, so the token-embedding difference is the input node's difference.
    """

    def __init__(self, rec: Recommender) -> None:
        self.model = rec.model.eval()
        self.embed = rec.model.get_input_embeddings()
        head = rec.model.get_output_embeddings().weight
        self.direction = (head[rec.fmt.yes_id] - head[rec.fmt.no_id]).detach()

    def gradient(self, point: torch.Tensor, last: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """d(Σ metric)/d(token embeddings) at `point` (B, T, d)."""
        leaf = point.detach().requires_grad_(True)
        with torch.enable_grad():
            hidden = self.model.base_model(inputs_embeds=leaf).last_hidden_state
            at_answer = hidden[torch.arange(len(last)), last]
            metric = sign.to(at_answer.dtype) * (at_answer @ self.direction)
            (grad,) = torch.autograd.grad(metric.sum(), [leaf])
        return grad.detach()

    @torch.no_grad()
    def embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens)


def input_scores(runner: GraphRunner, scorer: InputScorer, prompts: PromptSet, method: AttributionMethod, ig_steps: int,
                 batch_size: int, progress: ProgressFn | None = None, stage: str = "request") -> torch.Tensor:
    """Per prompt, role and item-row scores (n_prompts, n_roles + n_rows), by EAP or EAP-IG at the input.

    `runner` gives the node table's split of positions into roles and rows (the same `split_input`
    the graph attribution uses)."""
    if method is AttributionMethod.PATCHING or prompts.corrupt is None:
        raise ValueError("whole-request input scores are gradient attributions (EAP or EAP-IG) on counterfactuals")
    progress = or_silent(progress)
    steps = ig_steps if method is AttributionMethod.EAP_IG else 1
    width = max(len(p) for p in prompts.clean)
    out = []
    for start in range(0, len(prompts), batch_size):
        stop = min(start + batch_size, len(prompts))
        tokens = torch.as_tensor(pad_batch(prompts.clean[start:stop], runner.pad_id, width))
        corrupt = torch.as_tensor(pad_batch(prompts.corrupt[start:stop], runner.pad_id, width))
        last = torch.tensor([len(p) - 1 for p in prompts.clean[start:stop]])
        sign = torch.as_tensor(prompts.labels[start:stop]).float() * 2 - 1
        clean_in, corrupt_in = scorer.embeddings(tokens), scorer.embeddings(corrupt)
        grad = torch.zeros(clean_in.shape, dtype=torch.float32)
        for k in range(steps):
            alpha = (k + 0.5) / steps if method is AttributionMethod.EAP_IG else 1.0
            grad += scorer.gradient(corrupt_in + alpha * (clean_in - corrupt_in), last, sign).float() / steps
        at_input = ((clean_in - corrupt_in).float() * grad).sum(-1)  # (B, T)
        codes = position_codes(prompts, start, stop, width)
        out.append(split_input(runner, at_input, Batch(tokens, last, sign, None, codes, start)))
        progress(stage, stop, len(prompts))
    return torch.cat(out)


@dataclass(frozen=True)
class Presence:
    """Per item row: distinct users whose scored prompts contain it, on each side; and, over the whole
    populations, users who rated the item at all (the retained population never touching a row makes
    it forget-only by presence)."""

    forget_users: np.ndarray  # (n_rows,) in the scored forget prompts
    retain_users: np.ndarray  # (n_rows,) in the scored retain prompts
    forget_population: np.ndarray  # (n_rows,) of the forget population (its users' forgotten ratings)
    retain_population: np.ndarray  # (n_rows,) of the retained population
    n_forget_users: int
    n_retain_users: int

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Presence":
        return cls(**{k: (np.asarray(v, dtype=np.int64) if isinstance(v, list) else v) for k, v in d.items()})


def prompt_presence(runner: GraphRunner, prompts: PromptSet) -> np.ndarray:
    """(n_rows,) distinct users whose prompts contain each item row."""
    n_rows = len(runner.table.item_rows)
    seen: set[tuple[int, int]] = set()
    for user, tokens in zip(prompts.rows["user_id"].to_numpy(), prompts.clean):
        cols = runner.item_column[torch.as_tensor(tokens)]
        seen.update((int(user), int(c)) for c in torch.unique(cols[cols >= 0]))
    counts = np.zeros(n_rows, dtype=np.int64)
    for _, c in seen:
        counts[c] += 1
    return counts


def population_presence(runner: GraphRunner, ratings: pd.DataFrame) -> np.ndarray:
    """(n_rows,) distinct users in `ratings` (user_id, item_id) who rated each row's item."""
    rows = {int(n.split(":", 1)[1]): c for c, n in enumerate(runner.table.item_rows)}
    counts = np.zeros(len(rows), dtype=np.int64)
    per_item = ratings.groupby("item_id")["user_id"].nunique()
    for item, n in per_item.items():
        if int(item) in rows:
            counts[rows[int(item)]] = int(n)
    return counts
