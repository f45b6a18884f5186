"""Transfer: CURE with circuit groups found somewhere else.

Groups name modules (a0.h1, m2), so a labelling found on one deletion draw, or on a model
of the same architecture trained with the same recipe on another dataset, can drive CURE
on this request. If CURE's result barely moves, the split is a property of the model and
task rather than of one draw; if it moves a lot, the groups are specific to their source.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..circuits.discover import CircuitSettings, discover_circuits
from ..circuits.groups import Group
from ..model.recommender import Recommender
from ..model.train import train_recommender, training_recipe
from ..progress import ProgressFn
from ..workspace import Workspace

NO_SECOND_DATASET = "no second dataset given (cure study --transfer-data PATH, e.g. a local ml-1m folder)"
ONE_DRAW = "needs at least two deletion draws (seeds)"


@dataclass(frozen=True)
class GroupSource:
    """Where a cell's given groups came from, and the groups themselves."""
    kind: str  # "draws" or "datasets"
    seed: int  # the deletion draw the groups are used on
    label: str  # human-readable origin, e.g. "draw 1" or "ml-1m draw 0"
    groups: dict[str, Group]


def same_label_share(a: list[dict[str, Group]], b: list[dict[str, Group]]) -> float:
    """The share of modules that two lists of labellings (pairwise) put in the same group."""
    pairs = [(x[m], y.get(m)) for x, y in zip(a, b) for m in x]
    return sum(p == q for p, q in pairs) / max(1, len(pairs))


def same_recipe_model(other: Workspace, original: Recommender, progress: ProgressFn | None = None) -> Recommender:
    """The original's architecture and training recipe, trained (or loaded) on the other dataset."""
    model_cfg, train_cfg, backbone = training_recipe(original, "no same-recipe model can be trained on the "
                                                               "transfer dataset")
    return train_recommender(other, None, model_cfg, train_cfg, backbone=backbone, progress=progress)


def group_sources(original: Recommender, request: str, own: dict[int, dict[str, Group]], settings: CircuitSettings,
                  other: Workspace | None = None, progress: ProgressFn | None = None) -> list[GroupSource]:
    """Groups from the next deletion draw (draw s uses draw s+1's), and from the other dataset if given.

    `own`: each deletion draw's groups on this dataset, by seed.
    """
    seeds = tuple(own)
    sources = []
    if len(seeds) > 1:
        sources += [GroupSource("draws", s, f"draw {nxt}", own[nxt]) for s, nxt in zip(seeds, (*seeds[1:], seeds[0]))]
    if other is not None:
        model = same_recipe_model(other, original, progress)
        for s in seeds:
            labels = discover_circuits(other, model, other.forget_set(request, seed=s), settings, progress=progress)
            sources.append(GroupSource("datasets", s, f"{other.data.name} draw {s}", labels.labels))
    return sources


def planned(seeds: tuple[int, ...], other: Workspace | None) -> int:
    """How many transfer cells the study will run (known before any is run, for the progress total)."""
    return len(seeds) * ((len(seeds) > 1) + (other is not None))
