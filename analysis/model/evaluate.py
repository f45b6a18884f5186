"""Evaluation of a recommender on the fixed split: classification, ranking, JSD.

In model/ (it was analysis/evaluate.py) because training evaluates as it goes (the validation AUC that picks
the best epoch, the metrics stored with a model): train.py imported it from a function to dodge the cycle
evaluate -> model -> evaluate. It reads only the data, the workspace and the recommender, all at or below model/.
The bias baseline is scored here too, on the same candidate lists as the model."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..baselines import BiasBaseline, fit_bias_baseline
from ..data.forget import ForgetSet, retained_training
from ..data.samples import TEST, VALID
from ..metrics import Classification, classification, hit_ndcg_at_k, jsd
from ..progress import ProgressFn, or_silent
from ..workspace import Workspace
from .recommender import Recommender
from .sequences import PromptBuilder

RANK_NEGATIVES = 100
RANK_K = 10
RANK_SEED = 1234


@dataclass(frozen=True)
class Ranking:
    """Top-K ranking of each test user's test items among sampled unrated negatives (candidate_lists)."""
    hit_rate: float  # HR@K
    ndcg: float  # NDCG@K
    users: int
    negatives: int = RANK_NEGATIVES
    k: int = RANK_K

    def to_json(self) -> dict:
        return {f"hr@{self.k}": self.hit_rate, f"ndcg@{self.k}": self.ndcg, "users": self.users,
                "negatives": self.negatives}

    @classmethod
    def from_json(cls, d: dict) -> "Ranking":
        return cls(d[f"hr@{RANK_K}"], d[f"ndcg@{RANK_K}"], d["users"], d.get("negatives", RANK_NEGATIVES))


@dataclass(frozen=True)
class ModelEvaluation:
    """What evaluate_model measures and a model's recommender.json stores under "metrics" (to_json's layout);
    with a forget set also its samples and the test samples of the users it keeps."""
    test: Classification
    valid: Classification
    ranking: Ranking
    forget: Classification | None = None
    test_retained_users: Classification | None = None

    def to_json(self) -> dict:
        out = {"test": self.test.to_json(), "valid": self.valid.to_json(), "ranking": self.ranking.to_json()}
        if self.forget is not None:
            out |= {"forget": self.forget.to_json(), "test_retained_users": self.test_retained_users.to_json()}
        return out

    @classmethod
    def from_json(cls, d: dict) -> "ModelEvaluation":
        optional = lambda k: Classification.from_json(d[k]) if k in d else None  # noqa: E731
        return cls(Classification.from_json(d["test"]), Classification.from_json(d["valid"]),
                   Ranking.from_json(d["ranking"]), optional("forget"), optional("test_retained_users"))

    @classmethod
    def of(cls, rec: Recommender) -> "ModelEvaluation":
        """The evaluation stored with a trained model."""
        return cls.from_json(rec.meta["metrics"])


@dataclass(frozen=True)
class BaselineEvaluation:
    """The user-item bias baseline on the same test samples and candidate lists as the model."""
    test: Classification
    ranking: Ranking
    smoothing: tuple[float, float]


@dataclass(frozen=True)
class Scorecard:
    """What the Overview and the tour set side by side for a model and the bias baseline: test classification
    and top-10 ranking against sampled unrated negatives."""
    auc: float
    acc: float
    logloss: float
    hr_at_10: float
    ndcg_at_10: float

    @classmethod
    def of(cls, evaluation: ModelEvaluation | BaselineEvaluation) -> "Scorecard":
        test, ranking = evaluation.test, evaluation.ranking
        return cls(test.auc, test.acc, test.logloss, ranking.hit_rate, ranking.ndcg)


@dataclass(frozen=True)
class ModelCard:
    """A trained recommender as the Overview describes it (read from its stored metadata)."""
    backbone: str | None  # the pretrained folder it was fine-tuned from; None: trained from scratch here
    n_params: int
    train_seconds: float
    scorecard: Scorecard

    @classmethod
    def of(cls, rec: Recommender) -> "ModelCard":
        meta = rec.meta
        return cls(meta.get("backbone"), meta["n_params"], meta["training"]["train_seconds"],
                   Scorecard.of(ModelEvaluation.of(rec)))


def score_rows(rec: Recommender, ws: Workspace, rows: pd.DataFrame, progress: ProgressFn | None = None) -> np.ndarray:
    return rec.score_prompts(PromptBuilder(rec.fmt, ws.interactions).prompts(rows), progress=progress)


def evaluate_split(rec: Recommender, ws: Workspace, split: str, users: set[int] | None = None) -> Classification:
    rows = ws.interactions.split(split)
    if users is not None:
        rows = rows[rows["user_id"].isin(users)]
    return classification(rows["label"].to_numpy(), score_rows(rec, ws, rows))


def candidate_lists(ws: Workspace, negatives: int = RANK_NEGATIVES, seed: int = RANK_SEED) -> list[dict]:
    """Per test user with a liked test item: their test items plus unrated negatives (seeded)."""
    frame = ws.interactions.frame
    all_items = np.array(sorted(ws.interactions.item_ids))
    rng = np.random.default_rng(seed)
    lists = []
    for user_id, rows in frame.groupby("user_id", sort=True):
        test = rows[rows["split"] == TEST]
        if not test["label"].any():
            continue
        unrated = np.setdiff1d(all_items, rows["item_id"].to_numpy(), assume_unique=False)
        neg = rng.choice(unrated, size=min(negatives, len(unrated)), replace=False)
        items = np.concatenate([test["item_id"].to_numpy(), neg])
        relevant = np.concatenate([test["label"].to_numpy(), np.zeros(len(neg), dtype=int)])
        lists.append({"user_id": int(user_id), "context_pos": int(test["pos"].min()), "items": items,
                      "relevant": relevant})
    return lists


def _ranking(score_list, lists: list[dict], progress: ProgressFn, k: int = RANK_K) -> Ranking:
    hits, ndcgs = [], []
    for n, cand in enumerate(lists):
        hit, ndcg = hit_ndcg_at_k(cand["relevant"], score_list(cand), k)
        hits.append(hit)
        ndcgs.append(ndcg)
        if n % 50 == 0 or n == len(lists) - 1:
            progress("rank", n + 1, len(lists))
    return Ranking(float(np.mean(hits)), float(np.mean(ndcgs)), len(lists), RANK_NEGATIVES, k)


def ranking_metrics(rec: Recommender, ws: Workspace, progress: ProgressFn | None = None,
                    lists: list[dict] | None = None) -> Ranking:
    builder = PromptBuilder(rec.fmt, ws.interactions)
    lists = lists if lists is not None else candidate_lists(ws)
    score = lambda c: rec.score_candidates(  # noqa: E731
        builder.context(c["user_id"], c["context_pos"]), [rec.fmt.item_ids(i) for i in c["items"]])
    return _ranking(score, lists, or_silent(progress))


def bias_baseline(ws: Workspace, forget: ForgetSet | None = None) -> BiasBaseline:
    training = retained_training(ws.interactions, forget)
    return fit_bias_baseline(training, ws.interactions.split(VALID))


def baseline_metrics(ws: Workspace, forget: ForgetSet | None = None) -> BaselineEvaluation:
    base = bias_baseline(ws, forget)
    test = ws.interactions.split(TEST)
    scores = base.score(test["user_id"].to_numpy(), test["item_id"].to_numpy())
    lists = candidate_lists(ws)
    ranking = _ranking(lambda c: base.score(np.full(len(c["items"]), c["user_id"]), c["items"]), lists,
                       or_silent(None))
    return BaselineEvaluation(classification(test["label"].to_numpy(), scores), ranking, tuple(base.smoothing))


def evaluate_model(rec: Recommender, ws: Workspace, forget: ForgetSet | None = None,
                   progress: ProgressFn | None = None) -> ModelEvaluation:
    """Test classification and ranking; with a forget set also the forget samples and retained users."""
    test, valid, ranking = (evaluate_split(rec, ws, TEST), evaluate_split(rec, ws, VALID),
                            ranking_metrics(rec, ws, progress))
    if forget is None:
        return ModelEvaluation(test, valid, ranking)
    forget_rows = forget.forget_samples
    kept = set(ws.interactions.seen_user_ids) - set(forget.users)
    return ModelEvaluation(test, valid, ranking,
                           classification(forget_rows["label"].to_numpy(), score_rows(rec, ws, forget_rows)),
                           evaluate_split(rec, ws, TEST, users=kept))


def model_jsd(a: Recommender, b: Recommender, ws: Workspace, rows: pd.DataFrame) -> float:
    """Mean JSD between two models' Yes/No distributions on the same sample rows."""
    return jsd(score_rows(a, ws, rows), score_rows(b, ws, rows))
