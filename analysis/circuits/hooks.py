"""TransformerLens hook names: the vocabulary shared by tracing, patching and the UI."""
from __future__ import annotations

INPUT_HOOK = "blocks.0.hook_resid_pre"  # embeddings (+ positions): the graph's input node
LOGITS_IN_HOOK = "ln_final.hook_in"  # the residual stream the unembedding reads
READOUT_HOOK = "ln_final.hook_out"  # the normalised residual: the metric is read here, the unembedding skipped


def hook_z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def hook_mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def hook_resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def hook_pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def hook_attn_in(layer: int) -> str:
    """One residual copy per head (needs `set_use_attn_in(True)`)."""
    return f"blocks.{layer}.attn.hook_attn_in"


def hook_mlp_in(layer: int) -> str:
    """The MLP's pre-norm input (the residual stream after attention)."""
    return f"blocks.{layer}.ln2.hook_in"
