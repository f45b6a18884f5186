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
from ..circuits.ownership import recommender_table
from ..model.recommender import Recommender
from ..model.adapters import adapter_of
from ..model.train import train_recommender, training_recipe
from ..progress import ProgressFn
from ..workspace import Workspace

NO_SECOND_DATASET = "no second dataset given (cure study --transfer-data latest-small, or a local dataset folder)"
ONE_DRAW = "needs at least two deletion draws (seeds)"


@dataclass(frozen=True)
class GroupSource:
    """Where a cell's given groups came from, and the groups themselves."""
    kind: str  # "draws" or "datasets"
    seed: int  # the deletion draw the groups are used on
    label: str  # human-readable origin, e.g. "draw 1" or "ml-1m draw 0"
    groups: dict[str, Group]  # as found there (item rows included); CURE gets `transferable` ones
    sizes: dict[str, dict[str, int]] | None = None  # per node kind, for datasets


def same_label_share(a: list[dict[str, Group]], b: list[dict[str, Group]]) -> float:
    """The share of nodes labelled in both that two lists of labellings (pairwise) put in the same group
    (item rows of another dataset are not transferred, so they are not compared)."""
    pairs = [(x[m], y[m]) for x, y in zip(a, b) for m in x if m in y]
    return sum(p == q for p, q in pairs) / max(1, len(pairs))


def transferable(groups: dict[str, Group], model: Recommender) -> dict[str, Group]:
    """The groups that mean the same on another dataset: roles, heads, MLPs (and neurons). Item rows name
    that dataset's items (row:50 is another movie, or none, elsewhere): they are dropped, and this
    dataset's item rows stay inactive (frozen) under transferred groups."""
    table = recommender_table(model, neurons=True)
    keep = set(table.scored) - set(table.item_rows)  # `model`: the one the groups are applied to
    return {m: g for m, g in groups.items() if m in keep}


def sizes_by_kind(groups: dict[str, Group], model: Recommender) -> dict[str, dict[str, int]]:
    """Group sizes per node kind, for "does the same request give the same split on both datasets"."""
    table = recommender_table(model)
    kind = {n.name: n.kind.value for n in table.nodes}
    out: dict[str, dict[str, int]] = {}
    for name, group in groups.items():
        out.setdefault(kind.get(name, "other"), {g.value: 0 for g in Group})[group.value] += 1
    return out


def same_recipe_model(other: Workspace, original: Recommender, progress: ProgressFn | None = None) -> Recommender:
    """The original's architecture and training recipe, trained (or loaded) on the other dataset."""
    model_cfg, train_cfg, backbone = training_recipe(original, "no same-recipe model can be trained on the "
                                                               "transfer dataset")
    return train_recommender(other, None, model_cfg, train_cfg, backbone=backbone, progress=progress,
                             adapter=adapter_of(original.meta))


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
            sources.append(GroupSource("datasets", s, f"{other.data.name} draw {s}", labels.labels,
                                       sizes_by_kind(labels.labels, model)))
    return sources


def planned(seeds: tuple[int, ...], other: Workspace | None) -> int:
    """How many transfer cells the study will run (known before any is run, for the progress total): per draw,
    CURE with the next draw's groups, with the other dataset's, and there with its own and with ours."""
    return len(seeds) * ((len(seeds) > 1) + 3 * (other is not None))
