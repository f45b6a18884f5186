"""Membership inference: does the model still treat forgotten samples like training samples?

A loss/confidence attacker (logistic regression on the per-sample loss, the confidence
max(p, 1-p) and the signed score) is fitted on held-out splits: retained training samples
(members) vs validation samples (never trained on). It is then scored on forget samples
vs test samples; its AUC there is the MIA AUC. For the retrained model the forget
samples are non-members, so its value is the target an unlearned model should match
(it need not be 0.5: forget and test samples differ in time and in users).
"""
from __future__ import annotations

import numpy as np
import torch

from ..compute import to_numpy
from ..metrics import auc, sigmoid

ATTACK_SAMPLES = 2000
FIT_STEPS = 300


def features(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p = sigmoid(scores)
    p_true = np.where(labels == 1, p, 1 - p)
    loss = -np.log(np.clip(p_true, 1e-7, 1.0))
    confidence = np.maximum(p, 1 - p)
    return np.stack([loss, confidence, scores * (2 * labels - 1)], axis=1)


def fit_attacker(members: np.ndarray, non_members: np.ndarray, seed: int = 0):
    """Logistic regression on standardised features; returns a membership-score function."""
    x = np.concatenate([members, non_members])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    mean, std = x.mean(0), x.std(0) + 1e-8
    xt = torch.tensor((x - mean) / std, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    torch.manual_seed(seed)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=FIT_STEPS)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + 1e-3 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    weights, bias = to_numpy(w), float(b.detach())
    return lambda f: ((f - mean) / std) @ weights + bias


def mia_auc(member_feats: np.ndarray, non_member_feats: np.ndarray, forget_feats: np.ndarray,
            unseen_feats: np.ndarray) -> float:
    attack = fit_attacker(member_feats, non_member_feats)
    scores = np.concatenate([attack(forget_feats), attack(unseen_feats)])
    labels = np.concatenate([np.ones(len(forget_feats)), np.zeros(len(unseen_feats))])
    return auc(labels, scores)
