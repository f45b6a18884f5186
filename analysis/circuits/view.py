"""A discovered circuit as the app, the tour and the CLI read it: typed, read-only records.

`CircuitResult.to_json()` is the stored and printed layout (the CLI prints it; the cache keeps
what `from_json` needs to rebuild a result); `CircuitView.from_json` is its one reader, so
the Circuits page, its graph and its figures follow each number by attribute. Nodes keep
their kinds and groups as the strings the JSON holds ("item-row", "forget-specific"), since
the page colours, filters and labels by them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import cached_property

from .faithfulness import CurvePoint

GRAPH_KINDS = ("embedding", "head", "mlp")  # the nodes drawn in the graph's columns (item rows apart)


@dataclass(frozen=True)
class Specificity:
    """log(importance on forget / on retain) with its bootstrap interval and the test's q-values."""
    estimate: float
    low: float
    high: float
    half_width: float
    q_forget: float | None = None  # None: not tested on that side
    q_retain: float | None = None
    basis: str | None = None  # a forget-specific item row: "presence" or "use" (scores.NodeScores.basis)


@dataclass(frozen=True)
class Presence:
    """How many users' prompts on each side hold the node (item rows: whether it can be tested at all)."""
    forget: int
    retain: int


@dataclass(frozen=True)
class GroupedNode:
    """A node as its groups see it (NodeGroups.node_view): its group, the specificity behind it, on how many users'
    prompts it occurs, and its importance on each side. The circuit's NodeView adds attribution and patching."""
    name: str
    kind: str
    label: str
    group: str
    specificity: Specificity
    presence: Presence
    forget_importance: float
    retain_importance: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NodeView:
    """One node: its attribution on each side, exact patching where it was checked, its group and why."""
    name: str
    kind: str
    label: str
    group: str | None  # None for the input node (an endpoint, never grouped)
    forget_score: float
    retain_score: float
    forget_patching: float | None = None
    retain_patching: float | None = None
    specificity: Specificity | None = None
    presence: Presence | None = None
    forget_importance: float | None = None
    retain_importance: float | None = None

    @classmethod
    def from_json(cls, d: dict) -> "NodeView":
        known = {f.name for f in fields(cls)}
        spec, presence = d.get("specificity"), d.get("presence")
        return cls(**{**{k: v for k, v in d.items() if k in known},
                      "specificity": Specificity(**spec) if spec else None,
                      "presence": Presence(**presence) if presence else None})

    @property
    def mean_score(self) -> float:
        return (self.forget_score + self.retain_score) / 2

    @property
    def importance(self) -> float:
        return (abs(self.forget_score) + abs(self.retain_score)) / 2


@dataclass(frozen=True)
class EdgeView:
    source: str
    target: str
    forget_score: float
    retain_score: float
    score: float
    in_circuit: bool = False

    @classmethod
    def from_json(cls, d: dict) -> "EdgeView":
        return cls(d["from"], d["to"], d["forget_score"], d["retain_score"], d["score"], d.get("in_circuit", False))


@dataclass(frozen=True)
class DrawStability:
    """One kind of draw (prompt seeds or retain samples): per group, mean pairwise Jaccard (None: empty on every
    draw) and its size on each draw."""
    jaccard: dict[str, float | None]
    sizes: dict[str, list[int]]
    seeds: list[int]


@dataclass(frozen=True)
class GroupStability:
    """NodeGroups.stability: every kind of draw a result holds, and the one the headline reads (prompt seeds when
    there are several, else retain samples)."""
    by_draw: dict[str, DrawStability]
    main: str  # the kind of draw the headline reads

    @property
    def jaccard(self) -> dict[str, float | None]:
        return self.by_draw[self.main].jaccard

    @property
    def sizes(self) -> dict[str, list[int]]:
        return self.by_draw[self.main].sizes

    def to_json(self) -> dict:
        """The stored layout: the headline kind's fields at the top, every kind under by_draw."""
        return {**asdict(self.by_draw[self.main]), "by_draw": {k: asdict(v) for k, v in self.by_draw.items()}}


@dataclass(frozen=True)
class Thresholds:
    """The group rule as the result stored it (circuits.groups.GroupThresholds.as_dict)."""
    rule: str
    tau: float
    floor: float
    fdr: float
    min_users: int
    level: float
    forget: float
    retain: float


@dataclass(frozen=True)
class CircuitView:
    nodes: tuple[NodeView, ...]
    edges: tuple[EdgeView, ...]
    thresholds: Thresholds
    sentences: tuple[str, ...]  # one per group, read off the data (describe.py)
    tested: int | None  # tests behind Benjamini-Hochberg (None: the threshold rule tests nothing)
    targets_scored: bool
    n_layers: int | None = None
    n_heads: int | None = None
    n_edges: int | None = None
    floor_share: dict[str, float] | None = None  # per node family: the importance floor as a share
    curve: tuple[CurvePoint, ...] = ()
    at_circuit: CurvePoint | None = None  # the returned circuit's point on the curve
    spearman_vs_patching: float | None = None
    stability: dict[str, DrawStability] | None = None  # by kind of draw; None with a single draw
    forget_grad_share: float | None = None  # coverage: owned share of the forget gradient's squared norm
    moved_by_cure: float | None = None  # ... of it in forget-specific and task-shared nodes

    @classmethod
    def from_json(cls, j: dict) -> "CircuitView":
        """Read CircuitResult.to_json(); a partial layout (a test's, an older result's) gives None or empty."""
        shape, faith = j.get("shape") or {}, j.get("faithfulness") or {}
        at = faith.get("at_circuit")
        by_draw = (j.get("stability") or {}).get("by_draw") or {}
        coverage = j.get("coverage") or {}
        t = j["thresholds"]
        return cls(
            tuple(NodeView.from_json(n) for n in j["nodes"]), tuple(EdgeView.from_json(e) for e in j["edges"]),
            Thresholds(**{f.name: t[f.name] for f in fields(Thresholds)}),
            tuple(s["sentence"] for s in j.get("summary") or ()), j.get("tested"), bool(j.get("targets_scored")),
            shape.get("n_layers"), shape.get("n_heads"), shape.get("n_edges"), j.get("floor_share"),
            tuple(CurvePoint(**p) for p in faith.get("curve") or ()),
            CurvePoint(at["n_edges"], at["share"], at["faithfulness"], at["recovery"]) if at else None,
            (j.get("agreement") or {}).get("spearman_vs_patching"),
            {kind: DrawStability(**d) for kind, d in by_draw.items()} or None,
            coverage.get("forget_grad_share"), coverage.get("moved_by_cure"))

    def of_kind(self, *kinds: str) -> list[NodeView]:
        return [n for n in self.nodes if n.kind in kinds]

    @cached_property  # the page and its graph both look nodes up by name: built once per view
    def by_name(self) -> dict[str, NodeView]:
        return {n.name: n for n in self.nodes}
