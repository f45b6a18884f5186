"""Training-seed noise: what one retrain, and one original, would have been under another training seed.

A single retrain is one draw of the training noise. Measured on users:0.1 (bench_verdicts,
seeds 0 and 1): original forget AUC 0.7770 / 0.7759, retrain 0.7519 / 0.7514, against
gaps of 0.022-0.025; the forget-sample bootstrap of one (original, retrain) pair does not
see that spread at all. The study therefore trains the original and the retrain of every
deletion draw under each training seed, and per draw:

* the gap's interval is the *envelope* of the forget-sample bootstrap intervals over every
  pairing of an original seed with a retrain seed: sample noise and seed spread together.
  With 2 seeds the spread is one degree of freedom, so a variance estimated from it would
  itself be noise; the envelope is the conservative combination and needs no such estimate;
* "no measurable memorisation" is that envelope including 0;
* the noise floor of retrain distance: a retrain trained with another seed, measured as a
  run against the original's own retrain. No method can be told apart from the retrain
  closer than this.

The lab keeps one retrain per run and quotes this floor from the newest study of the same
data, model and request (`quote_for`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ..circuits.discover import model_identity
from ..data.forget import ForgetSet
from ..model.adapters import adapter_of
from ..model.recommender import Recommender
from ..model.train import train_recommender, training_recipe
from ..progress import ProgressFn
from ..unlearn.compare import reference_view
from ..unlearn.yardstick import forget_auc, gap_interval, retrain_distance
from ..workspace import Workspace


def training_seed_of(model: Recommender) -> int:
    return training_recipe(model, "its training seed is unknown")[1].seed


def training_seeds(original: Recommender, n: int) -> tuple[int, ...]:
    """The original's own seed first, then the next n - 1 integers."""
    own = training_seed_of(original)
    return tuple(own + k for k in range(n))


def reseeded(ws: Workspace, original: Recommender, seed: int, progress: ProgressFn | None = None) -> Recommender:
    """The original's recipe trained (or loaded from the cache) with another training seed; the original itself
    for its own seed."""
    model_cfg, train_cfg, backbone = training_recipe(original, "it cannot be retrained with another seed")
    if train_cfg.seed == seed:
        return original
    return train_recommender(ws, None, model_cfg, replace(train_cfg, seed=seed), backbone=backbone,
                             progress=progress, adapter=adapter_of(original.meta))


@dataclass(frozen=True)
class PairGap:
    """The gap between the original trained with one seed and the retrain trained with another (or the same)."""
    original_seed: int
    retrain_seed: int
    gap: float
    low: float
    high: float


@dataclass(frozen=True)
class DrawNoise:
    draw: int
    pairs: tuple[PairGap, ...]
    low: float | None  # the envelope of the pairs' intervals (None: no pair had one, e.g. one class)
    high: float | None
    measurable: bool  # the envelope excludes 0
    original_spread: float  # max - min forget AUC over the originals' seeds
    retrain_spread: float
    retrain_seed_distance: float | None  # the other seeds' retrains as runs against the own retrain (mean)


@dataclass(frozen=True)
class TrainingNoise:
    request: str
    data: str  # the workspace's fingerprint
    model: str  # the original's identity
    seeds: tuple[int, ...]
    draws: tuple[DrawNoise, ...]

    @property
    def retrain_seed_distance(self) -> float | None:
        """The noise floor of retrain distance, mean over draws."""
        values = [d.retrain_seed_distance for d in self.draws if d.retrain_seed_distance is not None]
        return sum(values) / len(values) if values else None

    @property
    def measurable(self) -> bool:
        return bool(self.draws) and all(d.measurable for d in self.draws)

    def to_json(self) -> dict:
        return {**asdict(self), "retrain_seed_distance": self.retrain_seed_distance, "measurable": self.measurable}

    @classmethod
    def from_json(cls, d: dict) -> "TrainingNoise":
        draws = tuple(DrawNoise(**{**x, "pairs": tuple(PairGap(**p) for p in x["pairs"])}) for x in d["draws"])
        return cls(d["request"], d["data"], d["model"], tuple(d["seeds"]), draws)

    def quote(self) -> str:
        floor = self.retrain_seed_distance
        lows = [d.low for d in self.draws if d.low is not None]
        highs = [d.high for d in self.draws if d.high is not None]
        spans = f"spans {min(lows):.4f} to {max(highs):.4f}" if lows else "could not be computed"
        return (f"Training-seed noise, measured by the study ({len(self.seeds)} seeds, {len(self.draws)} draws): a "
                f"retrain with another seed sits at distance {'n/a' if floor is None else f'{floor:.2f}'} from this "
                f"one, so distances below that cannot be told from the retrain; the gap's interval with both noises "
                f"{spans}"
                + ("" if self.measurable else " and includes 0 on some draw: no measurable memorisation there") + ".")


def draw_noise(ws: Workspace, draw: int, forget: ForgetSet, originals: dict[int, Recommender],
               retrains: dict[int, Recommender], own: int, progress: ProgressFn | None = None) -> DrawNoise:
    """`originals` and `retrains` by training seed, `own` the original's seed. Forget scores come from the cached
    reference views, the ones every run of the request was scored with."""
    labels = forget.forget_samples["label"].to_numpy()  # compare.sample_sets' "forget" set
    scores = lambda rec: reference_view(rec, ws, forget, progress).scores["forget"]  # noqa: E731
    o_scores = {t: scores(m) for t, m in originals.items()}
    r_scores = {t: scores(m) for t, m in retrains.items()}
    pairs = []
    for t, o in o_scores.items():
        for u, r in r_scores.items():
            g = gap_interval(o, r, labels)
            pairs.append(PairGap(t, u, g.gap, g.low, g.high))
    finite = [p for p in pairs if math.isfinite(p.low) and math.isfinite(p.high)]
    low, high = (min(p.low for p in finite), max(p.high for p in finite)) if finite else (None, None)
    o_auc = {t: forget_auc(s, labels) for t, s in o_scores.items()}
    r_auc = {u: forget_auc(s, labels) for u, s in r_scores.items()}
    floor = [retrain_distance(o_auc[own], r_auc[u], r_auc[own]) for u in r_auc if u != own]
    floor = [f for f in floor if f is not None]
    return DrawNoise(draw, tuple(pairs), low, high, low is not None and (low > 0 or high < 0),
                     max(o_auc.values()) - min(o_auc.values()), max(r_auc.values()) - min(r_auc.values()),
                     sum(floor) / len(floor) if floor else None)


def noise_identity(ws: Workspace, original: Recommender) -> tuple[str, str]:
    return ws.fingerprint, model_identity(original)

