"""Who owns which LoRA factor: the node table over a LoRA-adapted model's trainable parameters.

With an adapter (analysis/model/adapters.py) only the factors A (rank x in) and B (out x rank)
of each adapted projection train, and the update they make is B A. Ownership follows
what each factor's slices write or read, as ownership.py does for full weights:

* a projection *into* heads (GPT-2's fused `c_attn`; Llama's q, and k/v): the rows of B
  that write a head's output features belong to that head (its q, k and v parts for
  `c_attn`); with grouped-query attention a k/v slice belongs to the heads of its group;
* the projection *out of* heads (attention `c_proj`, `o_proj`): the columns of A that read a
  head's z belong to that head;
* the other factor of each (A of the input projections, B of the output projection) mixes
  every head through the shared rank dimension: one block owned by all heads of the layer
  (as ln_1 is for full weights);
* an MLP owns its adapters wholly; with neuron nodes, a neuron owns the rows of B of the
  up (and gate) projection and the column of A of the down projection that touch its
  unit, and the MLP keeps the shared factors.

peft stores both factors as (out, in) Linear weights for GPT-2's Conv1D too (fan_in_fan_out
transposes only the merged update), so rows of B are output features for every family.
Every element of every trainable parameter lies in exactly one block; frozen backbone
weights lie in none, since nothing updates them (tests/test_lora.py checks both, and that
a head's slices move only that head's output).
"""
from __future__ import annotations

from ..errors import SettingsError
from ..model.adapters import ADAPTER_NAME
from .nodes import Block, Kind, Node, NodeTable, Slice, _graph_nodes, head_name, hook_post, mlp_name, neuron_name
from .ownership import _shape, llama_attention, mlp_width

def _factors(params: dict, module: str) -> tuple[str, str]:
    """Parameter names of the A and B factors of the adapted module at `module`."""
    a, b = (f"{module}.lora_{f}.{ADAPTER_NAME}.weight" for f in ("A", "B"))
    if a not in params or b not in params:
        raise SettingsError(f"{module} carries no LoRA adapter; attach one first (analysis/model/adapters.py)")
    return a, b


def _whole(params: dict, name: str) -> Slice:
    return Slice(name, 0, 0, params[name].shape[0])


def _rows(name: str, start: int, length: int) -> Slice:
    return Slice(name, 0, start, length)


def _cols(name: str, start: int, length: int) -> Slice:
    return Slice(name, 1, start, length)


def _mlp(params: dict, layer: int, ups: list[str], down: str, width: int | None) -> list[Block]:
    """An MLP's adapters: wholly its own, or split among its neurons (the MLP keeps the shared factors)."""
    factors = [_factors(params, m) for m in ups] + [_factors(params, down)]
    if width is None:
        return [Block(tuple(_whole(params, n) for pair in factors for n in pair), (mlp_name(layer),))]
    (*up_pairs, (down_a, down_b)) = factors
    blocks = [Block(tuple(_whole(params, n) for n in [a for a, _ in up_pairs] + [down_b]), (mlp_name(layer),))]
    for unit in range(width):
        own = [_rows(b, unit, 1) for _, b in up_pairs] + [_cols(down_a, unit, 1)]
        blocks.append(Block(tuple(own), (neuron_name(layer, unit),)))
    return blocks


def _gpt2(model, params: dict, n_layers: int, n_heads: int, width: int | None) -> list[Block]:
    d = model.config.n_embd
    dh = d // n_heads
    blocks: list[Block] = []
    for l in range(n_layers):
        p = f"transformer.h.{l}"
        heads = tuple(head_name(l, h) for h in range(n_heads))
        qkv_a, qkv_b = _factors(params, f"{p}.attn.c_attn")
        out_a, out_b = _factors(params, f"{p}.attn.c_proj")
        for h in range(n_heads):
            own = [_rows(qkv_b, part * d + h * dh, dh) for part in range(3)] + [_cols(out_a, h * dh, dh)]
            blocks.append(Block(tuple(own), (heads[h],)))
        blocks.append(Block((_whole(params, qkv_a), _whole(params, out_b)), heads))
        blocks += _mlp(params, l, [f"{p}.mlp.c_fc"], f"{p}.mlp.c_proj", width)
    return blocks


def _llama(model, params: dict, n_layers: int, n_heads: int, width: int | None) -> list[Block]:
    kv, dh, per_group = llama_attention(model.config, n_heads)
    blocks: list[Block] = []
    for l in range(n_layers):
        p = f"model.layers.{l}"
        heads = tuple(head_name(l, h) for h in range(n_heads))
        (q_a, q_b), (k_a, k_b), (v_a, v_b), (o_a, o_b) = (_factors(params, f"{p}.self_attn.{m}")
                                                          for m in ("q_proj", "k_proj", "v_proj", "o_proj"))
        for h in range(n_heads):
            blocks.append(Block((_rows(q_b, h * dh, dh), _cols(o_a, h * dh, dh)), (heads[h],)))
        for g in range(kv):  # grouped-query attention: a K/V slice serves the heads of its group
            blocks.append(Block((_rows(k_b, g * dh, dh), _rows(v_b, g * dh, dh)),
                                heads[g * per_group:(g + 1) * per_group]))
        blocks.append(Block(tuple(_whole(params, n) for n in (q_a, k_a, v_a, o_b)), heads))
        blocks += _mlp(params, l, [f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"], f"{p}.mlp.down_proj", width)
    return blocks


FAMILIES = {"gpt2": _gpt2, "llama": _llama, "mistral": _llama, "qwen2": _llama}


def _hf_model(model) -> tuple[object, str]:
    """The Hugging Face model inside, and the prefix peft's wrapper adds to its parameter names."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.base_model.model, "base_model.model."
    return model, ""


def adapter_table(model, base: NodeTable | None = None, neurons: bool = False) -> NodeTable:
    """The node table over a LoRA-adapted model's trainable parameters (its adapter factors).

    `model` is peft's wrapper or the model inside it (adapters.inner); slice names follow
    the one given. `base` (the table of the model the adapter was put on, from
    ownership.recommender_table) supplies the nodes, so circuit groups found on that model
    apply as they are; roles, item rows and logits then own no adapter parameter. Without
    `base`: the graph's nodes (and the neurons, with `neurons`).
    """
    hf, prefix = _hf_model(model)
    family = hf.config.model_type
    if family not in FAMILIES:
        raise SettingsError(f"no adapter ownership for model type {family!r}; supported: {sorted(FAMILIES)}")
    n_layers, n_heads = _shape(hf)
    if base is not None:
        nodes = list(base.nodes)
        neurons = any(n.kind is Kind.NEURON for n in nodes)
        word_vocab = base.word_vocab
        if (base.n_layers, base.n_heads) != (n_layers, n_heads):
            raise SettingsError(f"the node table has {base.n_layers} x {base.n_heads} heads, the model "
                                f"{n_layers} x {n_heads}")
    else:
        nodes, word_vocab = _graph_nodes(n_layers, n_heads), False
    width = mlp_width(hf) if neurons else None
    if base is None and width is not None:
        nodes += [Node(neuron_name(l, i), Kind.NEURON, l + 0.5, l, i, hook_post(l), label=neuron_name(l, i))
                  for l in range(n_layers) for i in range(width)]
    params = {n: p for n, p in hf.named_parameters() if p.requires_grad}
    blocks = FAMILIES[family](hf, params, n_layers, n_heads, width)
    if prefix:
        blocks = [Block(tuple(Slice(prefix + s.param, s.dim, s.start, s.length) for s in b.slices), b.owners)
                  for b in blocks]
    return NodeTable(n_layers, n_heads, tuple(nodes), tuple(blocks), word_vocab=word_vocab)
