"""One typed table of circuit nodes: what every layer (runner, groups, module map, conflict, figures, app) reads.

A node has a name, a kind, a place in the forward pass, the hooks that read its output
and input, and (when built over a model) the parameter slices it owns. Kinds:

* `embedding` (role) nodes split the input by token role: `emb:items`, `emb:ratings`,
  `emb:attributes`, `emb:words` (prompt words and specials) and `emb:positions`;
* `item-row` nodes `row:<item id>` are the item-embedding rows themselves (word vocabulary
  only: a title prompt has no single row per item);
* `head` `a{l}.h{h}` and `mlp` `m{l}`: the graph's modules, between which edges run;
* `input` and `logits`: the edge graph's endpoints.

Ownership covers every trainable parameter: a head owns its Q/K/V/O slices, an MLP its
weights and the layer norm in front of it (ln_2), the heads of a layer jointly own the
norm they read (ln_1) and the attention output bias, the logits own the final norm and
the unembedding (with tied embeddings: the `Yes`/`No` rows, the only rows the score
reads), and the token embedding is split by vocabulary role into role and item-row
nodes. Parameters read by several nodes (ln_1, GQA's shared K/V, a title vocabulary's
rows) form a `Block` with several owners: every element of every parameter lies in
exactly one block, and a block's update rule follows from its owners' groups.

Adding a node kind = one `Kind`, its nodes in `node_table`, and its ownership rule in
`_blocks`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import torch

from ..errors import SettingsError
from .hooks import INPUT_HOOK, LOGITS_IN_HOOK, hook_attn_in, hook_mlp_in, hook_mlp_out, hook_z


class Kind(str, Enum):
    INPUT = "input"
    ROLE = "embedding"
    ITEM_ROW = "item-row"
    HEAD = "head"
    MLP = "mlp"
    LOGITS = "logits"


class Role(str, Enum):
    """Token roles of a prompt position; the order is the code stored per position (positions last)."""

    WORDS = "words"
    ATTRIBUTES = "attributes"
    ITEMS = "items"
    RATINGS = "ratings"
    POSITIONS = "positions"  # the position embedding: present at every position, not a token role


TOKEN_ROLES = (Role.WORDS, Role.ATTRIBUTES, Role.ITEMS, Role.RATINGS)  # index = position code
SCORED = (Kind.ROLE, Kind.ITEM_ROW, Kind.HEAD, Kind.MLP)


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


def role_name(role: Role) -> str:
    return f"emb:{role.value}"


def row_name(item_id: int) -> str:
    return f"row:{int(item_id)}"


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


def _shape(model) -> tuple[int, int]:
    cfg = model.config
    if cfg.model_type == "gpt2":
        return cfg.n_layer, cfg.n_head
    return cfg.num_hidden_layers, cfg.num_attention_heads


def node_table(model, vocab: VocabRoles | None = None, titles: dict[int, str] | None = None) -> NodeTable:
    """The full table over a Hugging Face model: roles, modules, item rows, and who owns which parameter.

    `vocab` (word vocabularies) splits the token embedding into role and item-row nodes;
    without it the token embedding is one block shared by the token-role nodes.
    """
    kind = model.config.model_type
    if kind not in FAMILIES:
        raise SettingsError(f"no node table for model type {kind!r}; supported: {sorted(FAMILIES)}")
    n_layers, n_heads = _shape(model)
    params = dict(model.named_parameters())
    has_positions = any(n.endswith("wpe.weight") for n in params)
    roles = [Role.WORDS, Role.ATTRIBUTES, Role.ITEMS, Role.RATINGS] if vocab else [Role.WORDS, Role.ITEMS, Role.RATINGS]
    if has_positions:
        roles.append(Role.POSITIONS)
    graph = _graph_nodes(n_layers, n_heads)
    nodes = [graph[0]] + [Node(role_name(r), Kind.ROLE, -1.0, index=_code(r), out_hook=INPUT_HOOK) for r in roles]
    nodes += graph[1:]
    if vocab:
        titles = titles or {}
        items = sorted({i for i in vocab.item if i >= 0})
        nodes += [Node(row_name(i), Kind.ITEM_ROW, -1.0, index=i, out_hook=INPUT_HOOK, label=titles.get(i, f"item {i}"))
                  for i in items]
    blocks = FAMILIES[kind](model, n_layers, n_heads) + _embedding_blocks(model, vocab, roles)
    table = NodeTable(n_layers, n_heads, tuple(nodes), tuple(blocks), word_vocab=vocab is not None)
    return table


def _code(role: Role) -> int:
    return TOKEN_ROLES.index(role) if role in TOKEN_ROLES else len(TOKEN_ROLES)


def _whole(params: dict, name: str) -> Slice:
    return Slice(name, 0, 0, params[name].shape[0])


def _row_runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row ids -> (start, length) runs, so a role's rows are a few slices, not thousands."""
    runs: list[tuple[int, int]] = []
    for r in sorted(rows):
        if runs and runs[-1][0] + runs[-1][1] == r:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((r, 1))
    return runs


def _embedding_blocks(model, vocab: VocabRoles | None, roles: list[Role]) -> list[Block]:
    params = dict(model.named_parameters())
    wte = next(n for n, p in params.items() if p is model.get_input_embeddings().weight)
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is params[wte]
    blocks: list[Block] = []
    for name in params:
        if name.endswith("wpe.weight"):
            blocks.append(Block((_whole(params, name),), (role_name(Role.POSITIONS),)))
    token_roles = [r for r in roles if r is not Role.POSITIONS]
    if vocab is None:
        blocks.append(Block((_whole(params, wte),), tuple(role_name(r) for r in token_roles)))
        return blocks
    size = params[wte].shape[0]
    if len(vocab.role) > size:
        raise SettingsError(f"the vocabulary has {len(vocab.role)} tokens but the embedding {size} rows")
    answers = set(vocab.answer_ids) if tied else set()
    by_owner: dict[str, list[int]] = {}
    for row in range(size):
        if row in answers:
            owner = "logits"  # the unembedding direction the score reads
        elif row < len(vocab.role) and vocab.item[row] >= 0:
            owner = row_name(vocab.item[row])
        else:
            owner = role_name(vocab.role[row] if row < len(vocab.role) else Role.WORDS)
        by_owner.setdefault(owner, []).append(row)
    for owner, rows in by_owner.items():
        blocks.append(Block(tuple(Slice(wte, 0, s, n) for s, n in _row_runs(rows)), (owner,)))
    return blocks


def _gpt2(model, n_layers: int, n_heads: int) -> list[Block]:
    params = dict(model.named_parameters())
    d = model.config.n_embd
    dh = d // n_heads
    blocks: list[Block] = []
    for l in range(n_layers):
        p = f"transformer.h.{l}"
        heads = tuple(head_name(l, h) for h in range(n_heads))
        for h in range(n_heads):
            qkv = [Slice(f"{p}.attn.c_attn.weight", 1, part * d + h * dh, dh) for part in range(3)]
            qkv += [Slice(f"{p}.attn.c_attn.bias", 0, part * d + h * dh, dh) for part in range(3)]
            blocks.append(Block(tuple(qkv + [Slice(f"{p}.attn.c_proj.weight", 0, h * dh, dh)]), (heads[h],)))
        blocks.append(Block((_whole(params, f"{p}.ln_1.weight"), _whole(params, f"{p}.ln_1.bias"),
                             _whole(params, f"{p}.attn.c_proj.bias")), heads))
        mlp = [f"{p}.ln_2.weight", f"{p}.ln_2.bias"] + [f"{p}.mlp.{n}.{w}" for n in ("c_fc", "c_proj")
                                                        for w in ("weight", "bias")]
        blocks.append(Block(tuple(_whole(params, n) for n in mlp), (mlp_name(l),)))
    final = [n for n in params if n.startswith("transformer.ln_f.")]
    if "lm_head.weight" in params:  # untied
        final.append("lm_head.weight")
    blocks.append(Block(tuple(_whole(params, n) for n in final), ("logits",)))
    return blocks


def _llama(model, n_layers: int, n_heads: int) -> list[Block]:
    cfg = model.config
    params = dict(model.named_parameters())
    kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    per_group = n_heads // kv
    blocks: list[Block] = []
    for l in range(n_layers):
        p = f"model.layers.{l}"
        heads = tuple(head_name(l, h) for h in range(n_heads))
        for h in range(n_heads):
            own = [Slice(f"{p}.self_attn.q_proj.weight", 0, h * dh, dh), Slice(f"{p}.self_attn.o_proj.weight", 1, h * dh, dh)]
            if f"{p}.self_attn.q_proj.bias" in params:
                own.append(Slice(f"{p}.self_attn.q_proj.bias", 0, h * dh, dh))
            blocks.append(Block(tuple(own), (heads[h],)))
        for g in range(kv):  # grouped-query attention: one K/V slice serves `per_group` heads
            shared = [Slice(f"{p}.self_attn.{proj}.{w}", 0, g * dh, dh) for proj in ("k_proj", "v_proj")
                      for w in ("weight", "bias") if f"{p}.self_attn.{proj}.{w}" in params]
            blocks.append(Block(tuple(shared), heads[g * per_group : (g + 1) * per_group]))
        joint = [n for n in (f"{p}.input_layernorm.weight", f"{p}.self_attn.o_proj.bias") if n in params]
        if joint:
            blocks.append(Block(tuple(_whole(params, n) for n in joint), heads))
        mlp = [n for n in params if n.startswith(f"{p}.mlp.") or n.startswith(f"{p}.post_attention_layernorm.")]
        blocks.append(Block(tuple(_whole(params, n) for n in mlp), (mlp_name(l),)))
    final = [n for n in params if n.startswith("model.norm.")]
    if "lm_head.weight" in params and params["lm_head.weight"] is not model.get_input_embeddings().weight:
        final.append("lm_head.weight")
    blocks.append(Block(tuple(_whole(params, n) for n in final), ("logits",)))
    return blocks


FAMILIES = {"gpt2": _gpt2, "llama": _llama, "mistral": _llama, "qwen2": _llama}


def ownership_count(model, table: NodeTable) -> dict[str, torch.Tensor]:
    """How many blocks cover each parameter element (1 everywhere when ownership is a partition)."""
    count = {n: torch.zeros_like(p, dtype=torch.int32) for n, p in model.named_parameters()}
    for b in table.blocks:
        for s in b.slices:
            s.of(count[s.param]).add_(1)
    return count


def vocab_roles(rec) -> VocabRoles | None:
    """A word vocabulary's roles (item rows exist), or None for a title prompt (BPE rows are shared)."""
    if getattr(rec.fmt, "kind", None) != "word":
        return None
    return VocabRoles.from_vocab(rec.tokenizer.get_vocab(), (rec.fmt.yes_id, rec.fmt.no_id))


def recommender_table(rec, titles: dict[int, str] | None = None) -> NodeTable:
    """The node table of a recommender's model, its embedding split by its vocabulary's roles."""
    return node_table(rec.model, vocab_roles(rec), titles)
