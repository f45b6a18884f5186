"""One typed table of circuit nodes: what every layer (runner, groups, module map, conflict, figures, app) reads.

A node has a name, a kind, a place in the forward pass, the hooks that read its output
and input, and (when built over a model) the parameter slices it owns. Kinds:

* `embedding` (role) nodes split the input by token role: `emb:items`, `emb:ratings`,
  `emb:attributes`, `emb:words` (prompt words and specials) and `emb:positions`;
* `item-row` nodes `row:<item id>` are the item-embedding rows themselves (word vocabulary
  only: a title prompt has no single row per item);
* `head` `a{l}.h{h}` and `mlp` `m{l}`: the graph's modules, between which edges run;
* `neuron` `m{l}.n{i}` (granularity "neurons"): an MLP's hidden units, each owning its
  input column and output row (the MLP node keeps ln_2 and the output bias);
* `input` and `logits`: the edge graph's endpoints.

Ownership covers every trainable parameter: a head owns its Q/K/V/O slices, an MLP its
weights and the layer norm in front of it (ln_2), the heads of a layer jointly own the
norm they read (ln_1) and the attention output bias, the logits own the final norm and
the unembedding (with tied embeddings: the `Yes`/`No` rows, the only rows the score
reads), and the token embedding is split by vocabulary role into role and item-row
nodes. Parameters read by several nodes (ln_1, GQA's shared K/V, a title vocabulary's
rows) form a `Block` with several owners: every element of every parameter lies in
exactly one block, and a block's update rule follows from its owners' groups.

Adding a node kind = one `Kind` here, its nodes in `ownership.node_table`, and its
ownership rule beside the others in ownership.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import torch

from .hooks import INPUT_HOOK, LOGITS_IN_HOOK, hook_attn_in, hook_mlp_in, hook_mlp_out, hook_z


class Kind(str, Enum):
    INPUT = "input"
    ROLE = "embedding"
    ITEM_ROW = "item-row"
    HEAD = "head"
    MLP = "mlp"
    NEURON = "neuron"
    LOGITS = "logits"


class Role(str, Enum):
    """Token roles of a prompt position; the order is the code stored per position (positions last)."""

    WORDS = "words"
    ATTRIBUTES = "attributes"
    ITEMS = "items"
    RATINGS = "ratings"
    POSITIONS = "positions"  # the position embedding: present at every position, not a token role


TOKEN_ROLES = (Role.WORDS, Role.ATTRIBUTES, Role.ITEMS, Role.RATINGS)  # index = position code
SCORED = (Kind.ROLE, Kind.ITEM_ROW, Kind.HEAD, Kind.MLP, Kind.NEURON)


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


def role_name(role: Role) -> str:
    return f"emb:{role.value}"


def row_name(item_id: int) -> str:
    return f"row:{int(item_id)}"


def neuron_name(layer: int, unit: int) -> str:
    return f"m{layer}.n{unit}"


def hook_post(layer: int) -> str:
    """The MLP's hidden activation (after the nonlinearity): what a neuron node's score reads."""
    return f"blocks.{layer}.mlp.hook_post"


@dataclass(frozen=True)
class Slice:
    param: str  # name in model.named_parameters()
    dim: int
    start: int
    length: int

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.narrow(self.dim, self.start, self.length)


@dataclass(frozen=True)
class Node:
    name: str
    kind: Kind
    order: float  # place in the forward pass: embeddings -1, heads of layer l at l, its MLP l + 0.5, logits inf
    layer: int | None = None
    index: int = 0  # head index, item id, or role code
    out_hook: str | None = None
    in_hook: str | None = None
    label: str = ""  # for people: an item row's title

    @property
    def scored(self) -> bool:
        return self.kind in SCORED

    @property
    def module(self) -> bool:
        """Heads and MLPs: the nodes between which the edge graph runs."""
        return self.kind in (Kind.HEAD, Kind.MLP)


@dataclass(frozen=True)
class Block:
    """Parameter slices with the same owners (one owner, or several readers of a shared parameter)."""

    slices: tuple[Slice, ...]
    owners: tuple[str, ...]


@dataclass(frozen=True)
class VocabRoles:
    """Which node owns each token-embedding row: a role per token id, and item ids for item tokens."""

    role: tuple[Role, ...]  # per token id
    item: tuple[int, ...]  # per token id: the item id, or -1
    answer_ids: tuple[int, ...] = ()  # Yes / No: read by the logits

    @classmethod
    def from_vocab(cls, vocab: dict[str, int], answer_ids: tuple[int, ...]) -> "VocabRoles":
        size = max(vocab.values()) + 1
        role, item = [Role.WORDS] * size, [-1] * size
        for word, i in vocab.items():
            if word.startswith("item_") and word[5:].isdigit():
                role[i], item[i] = Role.ITEMS, int(word[5:])
            elif word.startswith("★"):
                role[i] = Role.RATINGS
            elif word.split(":")[0] in ("age", "gender", "occupation") and ":" in word and word[-1] != ":":
                role[i] = Role.ATTRIBUTES
        return cls(tuple(role), tuple(item), tuple(answer_ids))


@dataclass(frozen=True)
class NodeTable:
    n_layers: int
    n_heads: int
    nodes: tuple[Node, ...]
    blocks: tuple[Block, ...] = ()  # empty for a table built without a model (graph and names only)
    word_vocab: bool = False  # item rows exist (one token per item)

    # --- lookups -----------------------------------------------------------------------------
    @cached_property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def __getitem__(self, name: str) -> Node:
        return self.by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def of_kind(self, *kinds: Kind) -> list[Node]:
        return [n for n in self.nodes if n.kind in kinds]

    @cached_property
    def upstream(self) -> list[str]:
        """Edge graph writers: the input, then per layer its heads and its MLP."""
        return [n.name for n in self.nodes if n.kind is Kind.INPUT or n.module]

    @cached_property
    def downstream(self) -> list[str]:
        return [n.name for n in self.nodes if n.module or n.kind is Kind.LOGITS]

    @cached_property
    def modules(self) -> list[str]:
        return [n.name for n in self.nodes if n.module]

    @cached_property
    def scored(self) -> list[str]:
        """Nodes with attribution scores and a group, in table order (roles, modules, item rows)."""
        return [n.name for n in self.nodes if n.scored]

    @cached_property
    def neurons(self) -> list[str]:
        return [n.name for n in self.nodes if n.kind is Kind.NEURON]

    @cached_property
    def roles(self) -> list[str]:
        return [n.name for n in self.nodes if n.kind is Kind.ROLE]

    @cached_property
    def item_rows(self) -> list[str]:
        return [n.name for n in self.nodes if n.kind is Kind.ITEM_ROW]

    @cached_property
    def owners(self) -> dict[str, list[Slice]]:
        """Every node that owns parameters -> its slices (shared blocks listed under each owner)."""
        out: dict[str, list[Slice]] = {}
        for b in self.blocks:
            for o in b.owners:
                out.setdefault(o, []).extend(b.slices)
        return out

    def exclusive(self, name: str) -> list[Slice]:
        """The slices only `name` owns (its shared blocks, e.g. ln_1 for a head, left out)."""
        return [s for b in self.blocks if b.owners == (name,) for s in b.slices]

    def heatmap(self, values: dict[str, float]) -> list[list[float | None]]:
        """rows = layers, columns = heads 0..H-1 then the MLP; None where a value is absent."""
        grid: list[list[float | None]] = [[None] * (self.n_heads + 1) for _ in range(self.n_layers)]
        for n in self.of_kind(Kind.HEAD, Kind.MLP):
            grid[n.layer][n.index if n.kind is Kind.HEAD else self.n_heads] = values.get(n.name)
        return grid


def _graph_nodes(n_layers: int, n_heads: int) -> list[Node]:
    nodes = [Node("input", Kind.INPUT, -1.0, out_hook=INPUT_HOOK)]
    for l in range(n_layers):
        nodes += [Node(head_name(l, h), Kind.HEAD, float(l), l, h, hook_z(l), hook_attn_in(l)) for h in range(n_heads)]
        nodes.append(Node(mlp_name(l), Kind.MLP, l + 0.5, l, 0, hook_mlp_out(l), hook_mlp_in(l)))
    nodes.append(Node("logits", Kind.LOGITS, float("inf"), in_hook=LOGITS_IN_HOOK))
    return nodes


def graph_table(n_layers: int, n_heads: int) -> NodeTable:
    """The modules and endpoints only (what an edge graph needs; no roles, rows or ownership)."""
    if n_layers < 1 or n_heads < 1:
        raise ValueError(f"a graph needs at least one layer and one head, got {n_layers} x {n_heads}")
    return NodeTable(n_layers, n_heads, tuple(_graph_nodes(n_layers, n_heads)))
