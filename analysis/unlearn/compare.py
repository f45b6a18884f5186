"""A run next to the retrained and the original model: forgetting, utility, privacy, rankings.

Each model is scored once on fixed, seeded sample sets (forget samples, test, and the
attacker's member / non-member sets); the retrained and original models' scores are
kept in memory per (model, request), since every run of a request compares to them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..circuits.discover import model_identity, retain_samples
from ..data.forget import ForgetSet
from ..data.samples import TEST, VALID
from ..metrics import classification, jsd
from ..model.recommender import Recommender
from ..model.sequences import PromptBuilder
from ..progress import ProgressFn, or_silent
from ..recommend import top_k
from ..workspace import Workspace
from .mia import ATTACK_SAMPLES, features, mia_auc

RANK_USERS = 20  # per side (forget users, retained users)
RANK_K = 10
SEED = 0

_SCORES: dict[tuple, dict] = {}


def sample_sets(ws: Workspace, forget: ForgetSet) -> dict[str, pd.DataFrame]:
    """The fixed rows every model is scored on (seeded, so runs compare on the same samples)."""
    cap = lambda rows: rows if len(rows) <= ATTACK_SAMPLES else rows.sample(ATTACK_SAMPLES, random_state=SEED)  # noqa: E731
    return {"forget": forget.forget_samples, "test": ws.interactions.split(TEST),
            "members": cap(retain_samples(ws, forget)), "non_members": cap(ws.interactions.split(VALID))}


def model_scores(rec: Recommender, ws: Workspace, forget: ForgetSet, sets: dict[str, pd.DataFrame],
                 remember: bool = False, progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
    key = (model_identity(rec), ws.fingerprint, str(forget.key))
    if remember and key in _SCORES:
        return _SCORES[key]
    builder = PromptBuilder(rec.fmt, ws.interactions)
    progress = or_silent(progress)
    out = {}
    for i, (name, rows) in enumerate(sets.items()):
        out[name] = rec.score_prompts(builder.prompts(rows))
        progress("score", i + 1, len(sets))
    if remember:
        _SCORES[key] = out
    return out


def _metrics(scores: dict[str, np.ndarray], sets: dict[str, pd.DataFrame]) -> dict:
    label = {k: v["label"].to_numpy() for k, v in sets.items()}
    test = classification(label["test"], scores["test"])
    fg = classification(label["forget"], scores["forget"])
    feats = {k: features(scores[k], label[k]) for k in sets}
    return {"auc_test": test["auc"], "acc_test": test["acc"], "logloss_test": test["logloss"],
            "auc_forget": fg["auc"], "acc_forget": fg["acc"], "logloss_forget": fg["logloss"],
            "mia_auc": mia_auc(feats["members"], feats["non_members"], feats["forget"], feats["test"])}


def _overlap(a: list[dict], b: list[dict]) -> float:
    return len({r["item_id"] for r in a} & {r["item_id"] for r in b}) / max(len(a), 1)


def ranking_agreement(before: Recommender, after: Recommender, ws: Workspace, forget: ForgetSet) -> dict:
    """Mean top-10 overlap before vs after, for seeded forget users and retained users."""
    rng = np.random.default_rng(SEED)
    forgotten = sorted(forget.users)
    kept = sorted(set(ws.interactions.user_ids) - set(forgotten))
    out = {}
    for side, users in (("forget_users", forgotten), ("retain_users", kept)):
        if not users:
            out[side] = None
            continue
        picked = rng.choice(users, size=min(RANK_USERS, len(users)), replace=False)
        out[side] = float(np.mean([_overlap(top_k(before, ws, int(u), RANK_K), top_k(after, ws, int(u), RANK_K))
                                   for u in picked]))
    return out


def compare_to_retrain(run: Recommender, retrain: Recommender, original: Recommender, ws: Workspace,
                       forget: ForgetSet, progress: ProgressFn | None = None) -> dict:
    """metrics[name] for run / retrain / original, each with JSD to retrain on forget and test."""
    sets = sample_sets(ws, forget)
    scores = {"run": model_scores(run, ws, forget, sets, progress=progress),
              "retrain": model_scores(retrain, ws, forget, sets, remember=True, progress=progress),
              "original": model_scores(original, ws, forget, sets, remember=True, progress=progress)}
    metrics = {}
    for name, s in scores.items():
        metrics[name] = _metrics(s, sets)
        metrics[name]["jsd_forget"] = jsd(s["forget"], scores["retrain"]["forget"])
        metrics[name]["jsd_test"] = jsd(s["test"], scores["retrain"]["test"])
    return {"metrics": metrics, "ranking_agreement": ranking_agreement(original, run, ws, forget)}
