"""Which samples a discovery scores: the whole request, an equally large retain sample, and the null.

* Forget side: every forget sample of the request (the forget side then does not depend
  on a prompt seed; only its counterfactuals do).
* Retain side: a seeded sample of the retained training samples as large as the forget
  side (all of them when fewer).
* The null request (`null=True`): the retained population's samples are split at random
  in two halves; the "forget" side is drawn from one half (as many samples as the real
  request has), the retain side from the other. Same users, same time lines on both
  sides, so nothing can be specific except by chance: whatever the rule calls
  forget-specific there is a false positive.

Populations (for presence): the ratings each side's users gave at all, history included
(the forgotten ratings for a real request; each half's ratings for the null).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.forget import ForgetSet, retained_training
from ..data.samples import TRAIN
from ..errors import ForgetSpecError
from ..workspace import Workspace

NULL_SEED = 7_919  # the null's split of the retained samples: fixed, so the null is one request


@dataclass(frozen=True)
class RequestSides:
    forget_rows: pd.DataFrame  # samples scored on the forget side (user_id, pos, item_id, label)
    retain_pool: pd.DataFrame  # samples a retain side is drawn from
    forget_population: pd.DataFrame  # (user_id, item_id) ratings of the forget side's population
    retain_population: pd.DataFrame
    null: bool

    def retain_rows(self, seed: int) -> pd.DataFrame:
        return sample_rows(self.retain_pool, len(self.forget_rows), seed)


def sample_rows(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(rows) == 0:
        raise ForgetSpecError("no samples to trace: the prompt set is empty")
    return rows.sample(n=min(n, len(rows)), random_state=seed).sort_values(["user_id", "pos"])


def retain_samples(ws: Workspace, forget: ForgetSet) -> pd.DataFrame:
    frame = ws.interactions.frame
    return frame[(frame["split"] == TRAIN).to_numpy() & ~forget.mask]


def request_sides(ws: Workspace, forget: ForgetSet, null: bool = False) -> RequestSides:
    retained = retain_samples(ws, forget)
    if not null:
        return RequestSides(forget.forget_samples.sort_values(["user_id", "pos"]), retained, forget.forgotten,
                            retained_training(ws.interactions, forget), False)
    if len(retained) < 2 * len(forget.forget_samples):
        raise ForgetSpecError(f"the null request needs twice the forget set's {len(forget.forget_samples)} samples among "
                              f"the {len(retained)} retained ones")
    half = np.random.default_rng(NULL_SEED).permutation(len(retained)) < len(retained) // 2
    a, b = retained[half], retained[~half]
    return RequestSides(sample_rows(a, len(forget.forget_samples), NULL_SEED), b, a, b, True)
