"""One loaded dataset with its interactions, shared by the CLI, the app and the tests."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from .cache import cache_root
from .config import CODE_VERSION, DataConfig
from .data.forget import ForgetSet, ForgetSpec, select_forget_set
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

    def forget_set(self, spec: ForgetSpec | str, seed: int = 0) -> ForgetSet:
        """The request's forget set; a string is parsed here (the CLI and the app parse once where a request
        enters and pass the ForgetSpec)."""
        return select_forget_set(self.interactions, spec, seed=seed)

    def key_core(self, model: str | None = None, forget: ForgetSet | None = None) -> dict:
        """What every cached artefact's key starts from: the code version, the data's content and the history
        length; the model's identity and the deletion request where the artefact depends on them. Each builder
        adds its own settings (train.model_key, discover.circuits_key, lab.run_key, compare.reference_view,
        report.report_key)."""
        core = {"code": CODE_VERSION, "data": self.fingerprint, "history": self.config.history}
        if model is not None:
            core["model"] = model
        if forget is not None:
            core["forget"] = forget.key
        return core

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
