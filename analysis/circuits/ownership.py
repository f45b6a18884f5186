"""Who owns which parameter: the node table built over a Hugging Face model (see nodes.py).

Per family (GPT-2; the Llama layout shared by Mistral and Qwen2) the heads, MLPs (or
their neurons) and logits get their blocks; the token embedding is split by vocabulary
role into role and item-row nodes, the position embedding goes to `emb:positions`.
Every element of every trainable parameter lies in exactly one block (`ownership_count`).
"""
from __future__ import annotations

import torch

from ..errors import SettingsError
from .hooks import INPUT_HOOK
from .nodes import (TOKEN_ROLES, Block, Kind, Node, NodeTable, Role, Slice, VocabRoles, _graph_nodes, head_name,
                    hook_post, mlp_name, neuron_name, role_name, row_name)


def _shape(model) -> tuple[int, int]:
    cfg = model.config
    if cfg.model_type == "gpt2":
        return cfg.n_layer, cfg.n_head
    return cfg.num_hidden_layers, cfg.num_attention_heads


def node_table(model, vocab: VocabRoles | None = None, titles: dict[int, str] | None = None,
               neurons: bool = False) -> NodeTable:
    """The full table over a Hugging Face model: roles, modules, item rows, and who owns which parameter.

    `vocab` (word vocabularies) splits the token embedding into role and item-row nodes;
    without it the token embedding is one block shared by the token-role nodes. `neurons`
    adds every MLP hidden unit as a node that owns its slices.
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
    if neurons:
        width = mlp_width(model)
        nodes += [Node(neuron_name(l, i), Kind.NEURON, l + 0.5, l, i, hook_post(l), label=neuron_name(l, i))
                  for l in range(n_layers) for i in range(width)]
        blocks = _split_mlps(model, blocks, n_layers, width)
    return NodeTable(n_layers, n_heads, tuple(nodes), tuple(blocks), word_vocab=vocab is not None)


def mlp_width(model) -> int:
    cfg = model.config
    if cfg.model_type == "gpt2":
        return cfg.n_inner or 4 * cfg.n_embd
    return cfg.intermediate_size


def mlp_out_weight(model, layer: int) -> torch.Tensor:
    """The MLP's output weight as (hidden units x d_model): row i is what neuron i writes."""
    params = dict(model.named_parameters())
    if model.config.model_type == "gpt2":
        return params[f"transformer.h.{layer}.mlp.c_proj.weight"]  # Conv1D: x @ W
    return params[f"model.layers.{layer}.mlp.down_proj.weight"].T  # nn.Linear: W @ x


def _neuron_slices(model, layer: int, unit: int) -> tuple[Slice, ...]:
    if model.config.model_type == "gpt2":
        p = f"transformer.h.{layer}.mlp"
        return (Slice(f"{p}.c_fc.weight", 1, unit, 1), Slice(f"{p}.c_fc.bias", 0, unit, 1),
                Slice(f"{p}.c_proj.weight", 0, unit, 1))
    p = f"model.layers.{layer}.mlp"
    names = dict(model.named_parameters())
    rows = [Slice(f"{p}.{proj}.{w}", 0, unit, 1) for proj in ("gate_proj", "up_proj") for w in ("weight", "bias")
            if f"{p}.{proj}.{w}" in names]
    return tuple(rows + [Slice(f"{p}.down_proj.weight", 1, unit, 1)])


def _split_mlps(model, blocks: list[Block], n_layers: int, width: int) -> list[Block]:
    """Each MLP's block split: its neurons own their columns and rows; the MLP node keeps the rest."""
    layer_of_mlp = {mlp_name(l): l for l in range(n_layers)}
    out = []
    for b in blocks:
        layer = layer_of_mlp.get(b.owners[0]) if len(b.owners) == 1 else None
        if layer is not None:
            unit_slices = [_neuron_slices(model, layer, i) for i in range(width)]
            split = {s.param for s in unit_slices[0]}
            out.append(Block(tuple(s for s in b.slices if s.param not in split), b.owners))
            out += [Block(sl, (neuron_name(layer, i),)) for i, sl in enumerate(unit_slices)]
        else:
            out.append(b)
    return out


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


def llama_attention(cfg, n_heads: int) -> tuple[int, int, int]:
    """(key/value heads, head width, query heads per key/value head) of a Llama-family config."""
    kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return kv, dh, n_heads // kv


def _llama(model, n_layers: int, n_heads: int) -> list[Block]:
    params = dict(model.named_parameters())
    kv, dh, per_group = llama_attention(model.config, n_heads)
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


def recommender_table(rec, titles: dict[int, str] | None = None, neurons: bool = False) -> NodeTable:
    """The node table of a recommender's model, its embedding split by its vocabulary's roles."""
    return node_table(rec.model, vocab_roles(rec), titles, neurons)
