"""One loaded dataset with its interactions, shared by the CLI, the app and the tests."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from .cache import cache_root
from .config import DataConfig
from .data.forget import ForgetSet, select_forget_set
from .data.loaders import load_dataset
from .data.samples import Interactions, build_interactions
from .data.schema import RatingsData
from .progress import ProgressFn


@dataclass
class Workspace:
    data: RatingsData
    interactions: Interactions
    config: DataConfig
    root: Path

    @cached_property
    def fingerprint(self) -> str:
        """Content hash of the ratings, items and users: keys stay valid if a file changes."""
        h = hashlib.sha256()
        for frame in (self.data.ratings, self.data.items.astype({"genres": str}), self.data.users):
            h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return f"{self.data.name}-{h.hexdigest()[:12]}"

    def forget_set(self, spec: str, seed: int = 0) -> ForgetSet:
        return select_forget_set(self.interactions, spec, seed=seed)

    def title(self, item_id: int) -> str:
        return self._titles.get(int(item_id), f"item {item_id}")

    @cached_property
    def _titles(self) -> dict[int, str]:
        return dict(zip(self.data.items["item_id"].tolist(), self.data.items["title"].tolist()))


def open_workspace(config: DataConfig | None = None, root: str | Path | None = None,
                   progress: ProgressFn | None = None) -> Workspace:
    config = config or DataConfig()
    path = cache_root(root)
    data = load_dataset(config.source, root=path, progress=progress)
    interactions = build_interactions(data, history=config.history, fraction=config.split_fraction,
                                      never_seen=config.never_seen)
    return Workspace(data, interactions, config, path)
