"""The one in-memory form every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
ITEM_COLUMNS = ["item_id", "title", "genres"]  # genres: tuple[str, ...] per item
USER_COLUMNS = ["user_id", "age_group", "gender", "occupation"]

# MovieLens-1M's age codes; MovieLens-100K's raw ages are bucketed onto the same groups
# so that both datasets share one attribute vocabulary.
AGE_GROUPS = [(1, "under18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-49"), (50, "50-55"), (56, "56+")]


LIKE_AT = 4.0  # a rating >= 4 is a like: ML-100K's "> 3" for whole stars; with half stars 3.5 is not a like


def likes(ratings):
    """The label of each rating (1 = like), the same rule on every dataset."""
    return ratings >= LIKE_AT


def age_group(age: int) -> str:
    label = AGE_GROUPS[0][1]
    for lower, name in AGE_GROUPS:
        if age >= lower:
            label = name
    return label


@dataclass(frozen=True)
class DatasetSummary:
    """The dataset card (Overview, `cure prepare`)."""
    name: str
    source: str
    users: int
    items: int
    rated_items: int
    ratings: int
    like_rate: float  # share of ratings >= 4
    genres: dict[str, int]  # movies per genre


@dataclass(frozen=True)
class RatingsData:
    """Ratings, item metadata and (optional) user attributes of one dataset.

    ratings: user_id:int, item_id:int, rating:float, timestamp:int
    items:   item_id:int, title:str, genres:tuple[str, ...]
    users:   user_id:int, age_group:str, gender:str, occupation:str ("unknown" where absent)
    """

    name: str
    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    genres: tuple[str, ...] = field(default=())
    source: str = ""

    def summary(self) -> "DatasetSummary":
        liked = float(likes(self.ratings["rating"]).mean())
        genre_counts = {g: 0 for g in self.genres}
        for gs in self.items["genres"]:
            for g in gs:
                genre_counts[g] = genre_counts.get(g, 0) + 1
        return DatasetSummary(self.name, self.source, int(self.ratings["user_id"].nunique()), int(len(self.items)),
                              int(self.ratings["item_id"].nunique()), int(len(self.ratings)), round(liked, 4),
                              genre_counts)
