"""Which parameter slices belong to which circuit module (`a{l}.h{h}`, `m{l}`).

A head owns its slices of the query, key, value and output weights (and biases); an MLP
owns its input and output weights. GPT-2 fuses Q, K and V into one `c_attn` Conv1D
(weight: d_model x 3 d_model, x @ W) and its output `c_proj` takes head h's rows. The
Llama family (and Mistral/Qwen2, same layout) has separate nn.Linear projections
(weight: out x in), so a head's Q rows and O columns. With grouped-query attention one
K/V slice serves several heads; it is then listed under each of them (documented
sharing, not a bug). Parameters no module owns (embeddings, layer norms, the attention
output bias) are "other".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..circuits.graph import head_name, mlp_name
from ..errors import SettingsError


@dataclass(frozen=True)
class Slice:
    param: str  # name in model.named_parameters()
    dim: int
    start: int
    length: int

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.narrow(self.dim, self.start, self.length)


ModuleMap = dict[str, list[Slice]]


def _gpt2(model) -> ModuleMap:
    cfg = model.config
    d, H = cfg.n_embd, cfg.n_head
    dh = d // H
    out: ModuleMap = {}
    for l in range(cfg.n_layer):
        p = f"transformer.h.{l}"
        for h in range(H):
            qkv = [Slice(f"{p}.attn.c_attn.weight", 1, part * d + h * dh, dh) for part in range(3)]
            qkv += [Slice(f"{p}.attn.c_attn.bias", 0, part * d + h * dh, dh) for part in range(3)]
            out[head_name(l, h)] = qkv + [Slice(f"{p}.attn.c_proj.weight", 0, h * dh, dh)]
        out[mlp_name(l)] = [Slice(f"{p}.mlp.{n}.{w}", 0, 0, _size(model, f"{p}.mlp.{n}.{w}", 0))
                            for n in ("c_fc", "c_proj") for w in ("weight", "bias")]
    return out


def _llama(model) -> ModuleMap:
    cfg = model.config
    H = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or H
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    names = dict(model.named_parameters())
    out: ModuleMap = {}
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}"
        for h in range(H):
            g = h // (H // kv)  # the K/V group this head reads
            slices = [Slice(f"{p}.self_attn.q_proj.weight", 0, h * dh, dh),
                      Slice(f"{p}.self_attn.k_proj.weight", 0, g * dh, dh),
                      Slice(f"{p}.self_attn.v_proj.weight", 0, g * dh, dh),
                      Slice(f"{p}.self_attn.o_proj.weight", 1, h * dh, dh)]
            for proj, start in (("q_proj", h * dh), ("k_proj", g * dh), ("v_proj", g * dh)):
                if f"{p}.self_attn.{proj}.bias" in names:
                    slices.append(Slice(f"{p}.self_attn.{proj}.bias", 0, start, dh))
            out[head_name(l, h)] = slices
        out[mlp_name(l)] = [Slice(n, 0, 0, t.shape[0]) for n, t in names.items() if n.startswith(f"{p}.mlp.")]
    return out


def _size(model, name: str, dim: int) -> int:
    return dict(model.named_parameters())[name].shape[dim]


FAMILIES = {"gpt2": _gpt2, "llama": _llama, "mistral": _llama, "qwen2": _llama}


def module_map(model) -> ModuleMap:
    kind = model.config.model_type
    if kind not in FAMILIES:
        raise SettingsError(f"no module map for model type {kind!r}; supported: {sorted(FAMILIES)}")
    return FAMILIES[kind](model)


def parse_modules(text: str | list[str] | tuple[str, ...], known: ModuleMap) -> tuple[str, ...]:
    """'a0.h1,m2' (or a list) -> module names, each checked against the model."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SettingsError(f"unknown modules {unknown}; this model has {len(known)} (e.g. {', '.join(list(known)[:3])})")
    if not names:
        raise SettingsError("no modules named")
    return tuple(dict.fromkeys(names))


def flat(tensors: dict[str, torch.Tensor], slices: list[Slice]) -> torch.Tensor:
    """One module's part of a {param name: tensor} dict (gradients, updates), as one vector."""
    return torch.cat([s.of(tensors[s.param]).reshape(-1) for s in slices])


def write_flat(tensors: dict[str, torch.Tensor], slices: list[Slice], vector: torch.Tensor) -> None:
    """The inverse of `flat`: put a module vector back into the tensors' slices (in place)."""
    offset = 0
    for s in slices:
        view = s.of(tensors[s.param])
        view.copy_(vector[offset : offset + view.numel()].view_as(view))
        offset += view.numel()


def owned_mask(model, mapping: ModuleMap, modules) -> dict[str, torch.Tensor]:
    """Boolean mask per parameter: True on the slices of the given modules."""
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    for m in modules:
        for s in mapping[m]:
            s.of(masks[s.param]).fill_(True)
    return masks
