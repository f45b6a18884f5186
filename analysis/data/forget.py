"""Deletion requests (forget sets) at three levels, parsed from one string.

    users:0.1              a seeded 10% of users: all their training interactions
    users:12,40,7          those users
    interactions:0.05      a seeded 5% of all training interactions
    genre:Horror           every training interaction with a Horror movie
    genre:Horror@users:12,40   the same, for chosen users only

"Training interactions" are the ratings the model learns from: the history-only
prefix of each user and the train split. Removing one removes it everywhere it is
used in training, as a label and as history context of later samples (see
`retained_training`), which is what an exact retrain must not have seen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ForgetSpecError
from .samples import TRAIN, VALID, Interactions

LEVELS = ("users", "interactions", "genre")


@dataclass(frozen=True)
class ForgetSpec:
    level: str
    fraction: float | None = None
    user_ids: tuple[int, ...] = ()
    genre: str | None = None

    @property
    def is_random(self) -> bool:
        """A fraction is drawn with a seed; a genre or a list of users is the same set whatever the seed."""
        return self.fraction is not None

    def __str__(self) -> str:
        if self.level == "genre":
            users = f"@users:{','.join(map(str, self.user_ids))}" if self.user_ids else ""
            return f"genre:{self.genre}{users}"
        if self.fraction is not None:
            return f"{self.level}:{self.fraction!r}"  # repr round-trips exactly: distinct specs, distinct keys
        return f"users:{','.join(map(str, self.user_ids))}"


def _fraction(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ForgetSpecError(f"{spec!r}: {text!r} is not a fraction") from None
    if not 0.0 < value < 1.0:
        raise ForgetSpecError(f"{spec!r}: the fraction must be strictly between 0 and 1, got {value:g}")
    return value


def _ids(text: str, spec: str) -> tuple[int, ...]:
    try:
        ids = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise ForgetSpecError(f"{spec!r}: user ids must be integers separated by commas") from None
    if not ids:
        raise ForgetSpecError(f"{spec!r}: no user ids given")
    return ids


def parse_forget_spec(spec: str) -> ForgetSpec:
    text = spec.strip()
    level, sep, rest = text.partition(":")
    level = level.strip().lower()
    if not sep or level not in LEVELS or not rest.strip():
        raise ForgetSpecError(
            f"{spec!r} is not a deletion request; use users:0.1, users:12,40,7, interactions:0.05, "
            "genre:Horror or genre:Horror@users:12,40"
        )
    rest = rest.strip()
    if level == "genre":
        genre, at, users = rest.partition("@")
        user_ids: tuple[int, ...] = ()
        if at:
            tag, _, ids = users.partition(":")
            if tag.strip().lower() != "users":
                raise ForgetSpecError(f"{spec!r}: after '@' write users:ID,ID,...")
            user_ids = _ids(ids, spec)
        return ForgetSpec("genre", genre=genre.strip(), user_ids=user_ids)
    if level == "interactions":
        return ForgetSpec("interactions", fraction=_fraction(rest, spec))
    if "," in rest or rest.isdigit():
        return ForgetSpec("users", user_ids=_ids(rest, spec))
    try:
        float(rest)
    except ValueError:
        raise ForgetSpecError(f"{spec!r}: expected a fraction of users (users:0.1) or user ids (users:12,40,7)") from None
    return ForgetSpec("users", fraction=_fraction(rest, spec))


@dataclass(frozen=True)
class ForgetSet:
    """The interactions a deletion request removes, as a mask over `Interactions.frame`."""

    spec: ForgetSpec
    seed: int
    mask: np.ndarray  # bool, aligned with interactions.frame rows
    interactions: Interactions

    @property
    def key(self) -> dict:
        return {"spec": str(self.spec), "seed": self.seed}

    @property
    def forgotten(self) -> pd.DataFrame:
        return self.interactions.frame[self.mask]

    @property
    def forget_samples(self) -> pd.DataFrame:
        """Forgotten interactions that are training labels: what the forget loss sees."""
        f = self.forgotten
        return f[f["split"] == TRAIN]

    @property
    def users(self) -> tuple[int, ...]:
        return tuple(sorted(self.forgotten["user_id"].unique().tolist()))

    def held_out(self, min_rows: int = 50) -> pd.DataFrame:
        """Validation samples the request would cover if they had been trained on: the forgotten users'
        (user level), the genre's (behaviour level), any (interaction level). Never trained on, so their
        loss is what forgotten samples should look like; all validation samples when fewer than min_rows."""
        frame = self.interactions.frame
        valid = frame["split"] == VALID
        if self.spec.level == "users":
            rows = frame[valid & frame["user_id"].isin(self.users)]
        elif self.spec.level == "genre":
            items = self.interactions.data.items
            genre_items = items.loc[items["genres"].map(lambda gs: self.spec.genre in gs), "item_id"]
            match = valid & frame["item_id"].isin(genre_items)
            if self.spec.user_ids:
                match &= frame["user_id"].isin(self.spec.user_ids)
            rows = frame[match]
        else:
            rows = frame[valid]
        return rows if len(rows) >= min_rows else frame[valid]

    def summary(self) -> "ForgetSummary":
        training = self.interactions.training
        return ForgetSummary(str(self.spec), self.seed, int(self.mask.sum()), int(len(self.forget_samples)),
                             round(float(self.mask.sum()) / len(training), 4), len(self.users))


@dataclass(frozen=True)
class ForgetSummary:
    """A deletion request as results record it (runs, circuits, models): the canonical spec, its draw, its size."""
    spec: str
    seed: int
    forgotten_interactions: int
    forget_samples: int
    share_of_training: float
    users_touched: int

    @property
    def parsed(self) -> ForgetSpec:
        return parse_forget_spec(self.spec)


def retained_training(interactions: Interactions, forget: ForgetSet | None) -> pd.DataFrame:
    """Training interactions with the forget set removed (all of it, labels and context)."""
    frame = interactions.frame
    keep = frame["split"].isin(("history", TRAIN)).to_numpy()
    if forget is not None:
        keep = keep & ~forget.mask
    return frame[keep]


def select_forget_set(interactions: Interactions, spec: str | ForgetSpec, seed: int = 0) -> ForgetSet:
    parsed = parse_forget_spec(spec) if isinstance(spec, str) else spec
    frame = interactions.frame
    training = frame["split"].isin(("history", TRAIN)).to_numpy()
    rng = np.random.default_rng(seed)
    all_users = np.array(sorted(interactions.seen_user_ids))  # never-seen users were never trained on

    if parsed.level == "users":
        if parsed.fraction is not None:
            n = int(np.floor(parsed.fraction * len(all_users) + 0.5))
            if n == 0:
                raise ForgetSpecError(f"{parsed}: {parsed.fraction:g} of {len(all_users)} users selects nobody")
            chosen = rng.choice(all_users, size=n, replace=False)
        else:
            _check_users(interactions, parsed)
            chosen = np.array(parsed.user_ids)
        if len(set(chosen.tolist())) == len(all_users):
            raise ForgetSpecError(f"{parsed}: selects every user; nothing would be left to retain")
        mask = training & frame["user_id"].isin(chosen).to_numpy()
    elif parsed.level == "interactions":
        idx = np.flatnonzero(training)
        n = int(np.floor(parsed.fraction * len(idx) + 0.5))
        if n == 0:
            raise ForgetSpecError(f"{parsed}: selects no interaction out of {len(idx)}")
        mask = np.zeros(len(frame), dtype=bool)
        mask[rng.choice(idx, size=n, replace=False)] = True
    else:
        genre = _resolve_genre(interactions, parsed)
        items = interactions.data.items
        genre_items = items.loc[items["genres"].map(lambda gs: genre in gs), "item_id"]
        mask = training & frame["item_id"].isin(genre_items).to_numpy()
        if parsed.user_ids:
            _check_users(interactions, parsed)
            mask &= frame["user_id"].isin(parsed.user_ids).to_numpy()
        parsed = ForgetSpec("genre", genre=genre, user_ids=parsed.user_ids)

    # a deterministic request has one forget set: seed 0 always, so its retrain and runs are stored once
    result = ForgetSet(parsed, seed if parsed.is_random else 0, mask, interactions)
    if mask.sum() == 0:
        raise ForgetSpecError(f"{parsed}: selects no training interaction")
    if mask.sum() == training.sum():
        raise ForgetSpecError(f"{parsed}: selects every training interaction; nothing would be left to retain")
    if len(result.forget_samples) == 0:
        raise ForgetSpecError(f"{parsed}: selects {int(mask.sum())} history-only interactions but no training sample")
    return result


def _check_users(interactions: Interactions, spec: ForgetSpec) -> None:
    known = interactions.user_ids
    unknown = [u for u in spec.user_ids if u not in known]
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise ForgetSpecError(f"{spec}: unknown user id(s) {shown} ({len(unknown)} in all)")
    held = sorted(set(spec.user_ids) & interactions.never_seen_user_ids)
    if held:
        raise ForgetSpecError(f"{spec}: user(s) {', '.join(map(str, held[:5]))} are held out as never seen: no model "
                              "is trained on them, so there is nothing to forget")


def _resolve_genre(interactions: Interactions, spec: ForgetSpec) -> str:
    genres = interactions.data.genres
    by_lower = {g.lower(): g for g in genres}
    genre = by_lower.get((spec.genre or "").lower())
    if genre is None:
        raise ForgetSpecError(f"{spec}: unknown genre {spec.genre!r}; known: {', '.join(genres)}")
    return genre
