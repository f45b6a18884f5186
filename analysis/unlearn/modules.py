"""Which parameter slices belong to which circuit node: the node table's ownership, for unlearning.

The node table (analysis/circuits/nodes.py) is the one source: heads own their Q/K/V/O
slices (GPT-2's fused `c_attn` columns and `c_proj` rows; Llama's q/k/v rows and o
columns), MLPs their weights and ln_2, the heads of a layer jointly own ln_1 and the
attention output bias, GQA's K/V slices are owned by the heads of their group, the
logits own the final norm and the unembedding, and the token embedding is split into
role and item-row nodes. So every trainable parameter is owned (measured on the default
model: 100% of the forget gradient lies in owned slices, against 8.4% when only heads
and MLPs owned parameters).
"""
from __future__ import annotations

import torch

from ..circuits.nodes import NodeTable, Slice, VocabRoles  # noqa: F401 - Slice re-exported
from ..circuits.ownership import node_table, recommender_table  # noqa: F401 - re-exported
from ..errors import SettingsError


def module_map(model, vocab: VocabRoles | None = None, titles: dict[int, str] | None = None) -> NodeTable:
    """The node table over `model` with ownership (see nodes.py); `vocab` splits the embedding by role."""
    return node_table(model, vocab, titles)


def parse_modules(text: str | list[str] | tuple[str, ...], known: NodeTable) -> tuple[str, ...]:
    """'a0.h1,m2,row:50' (or a list) -> node names, each checked against the model's table."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    owners = known.owners
    unknown = [n for n in names if n not in owners]
    if unknown:
        raise SettingsError(f"unknown modules {unknown}; this model has {len(owners)} nodes that own parameters "
                            f"(e.g. {', '.join(list(known.modules)[:3])}, {', '.join(known.roles[:2])})")
    if not names:
        raise SettingsError("no modules named")
    return tuple(dict.fromkeys(names))


def flat(tensors: dict[str, torch.Tensor], slices) -> torch.Tensor:
    """One node's (or block's) part of a {param name: tensor} dict (gradients, updates), as one vector."""
    return torch.cat([s.of(tensors[s.param]).reshape(-1) for s in slices])


def write_flat(tensors: dict[str, torch.Tensor], slices, vector: torch.Tensor) -> None:
    """The inverse of `flat`: put a vector back into the tensors' slices (in place)."""
    offset = 0
    for s in slices:
        view = s.of(tensors[s.param])
        view.copy_(vector[offset : offset + view.numel()].view_as(view))
        offset += view.numel()


def owned_mask(model, table: NodeTable, nodes) -> dict[str, torch.Tensor]:
    """Boolean mask per parameter: True on the slices the given nodes own (shared blocks included)."""
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    owners = table.owners
    for m in nodes:
        for s in owners[m]:
            s.of(masks[s.param]).fill_(True)
    return masks
