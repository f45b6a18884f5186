"""Differentiable scores and the losses unlearning methods combine.

All losses read the recommender's score (logit Yes - logit No at the answer position) of
canonical single-answer prompts. Conventions: every loss here is *minimised*; the forget
objective of gradient ascent is therefore -BCE on forget samples.

They live in model/ (moved from unlearn/): they read nothing but the recommender, and circuits/coverage.py
measures the same gradient-ascent objective the unlearning runs descend, so circuits (below unlearn) and
unlearn both import them from here instead of circuits importing upward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .recommender import answer_scores, final_hidden
from .sequences import pad_batch


def prompt_scores(model, prompts: list[list[int]], pad_id: int, yes_id: int, no_id: int) -> torch.Tensor:
    """Scores of a batch of prompts, with gradients (the model's train/eval mode is the caller's)."""
    ids = torch.as_tensor(pad_batch(prompts, pad_id))
    lengths = [len(p) for p in prompts]
    hidden = final_hidden(model, ids, lengths)[torch.arange(len(prompts)), torch.tensor(lengths) - 1]
    return answer_scores(model, hidden, yes_id, no_id)


def bce(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(scores, labels.float())


def log_p_label(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(true label) per sample under the Yes/No distribution."""
    return -F.binary_cross_entropy_with_logits(scores, labels.float(), reduction="none")


def ga_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -bce(scores, labels)


def npo_loss(scores: torch.Tensor, ref_scores: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative preference optimisation (Zhang et al. 2024): bounded, unlike gradient ascent.

    (2/beta) * E[log(1 + (p_theta / p_ref)^beta)] over forget samples.
    """
    ratio = log_p_label(scores, labels) - log_p_label(ref_scores, labels)
    return 2.0 / beta * F.softplus(beta * ratio).mean()


def kl_to_reference(scores: torch.Tensor, ref_scores: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_theta) of the Yes/No distributions, averaged over samples."""
    p = torch.sigmoid(ref_scores)
    log_q1, log_q0 = F.logsigmoid(scores), F.logsigmoid(-scores)
    log_p1, log_p0 = F.logsigmoid(ref_scores), F.logsigmoid(-ref_scores)
    return (p * (log_p1 - log_q1) + (1 - p) * (log_p0 - log_q0)).mean()
