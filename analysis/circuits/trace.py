"""Tracing the recommender through TransformerLens 4's TransformerBridge.

Hook names (`blocks.{l}.attn.hook_z`, `blocks.{l}.hook_mlp_out`, ...) are the shared
vocabulary between analysis and UI. Everything is taken at the answer position (the
last real token of each right-padded prompt), where the score is read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.recommender import Recommender
from ..model.sequences import pad_batch
from ..progress import ProgressFn, or_silent


def hook_z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def hook_mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def hook_resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def hook_pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def load_bridge(rec: Recommender):
    """Wrap the saved HF folder of a recommender (offline) in a TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge

    if rec.path is None:
        raise ValueError("the recommender must be saved before it can be traced")
    bridge = TransformerBridge.boot_transformers(str(rec.path), device="cpu")
    bridge.eval()
    return bridge


@dataclass
class Trace:
    tokens: torch.Tensor  # (B, T) right-padded
    last: torch.Tensor  # (B,) answer position
    scores: torch.Tensor  # (B,) logit(Yes) - logit(No)
    head_z: torch.Tensor  # (B, L, H, d_head) at the answer position
    mlp_out: torch.Tensor  # (B, L, d_model) at the answer position
    resid_pre: torch.Tensor  # (B, L, d_model) at the answer position
    patterns: torch.Tensor  # (B, L, H, T) attention of the answer position over the prompt


@torch.no_grad()
def trace_prompts(bridge, rec: Recommender, prompts: list[list[int]], batch_size: int = 256,
                  progress: ProgressFn | None = None) -> Trace:
    progress = or_silent(progress)
    n_layers = bridge.cfg.n_layers
    wanted = {hook_z(l) for l in range(n_layers)} | {hook_mlp_out(l) for l in range(n_layers)}
    wanted |= {hook_resid_pre(l) for l in range(n_layers)} | {hook_pattern(l) for l in range(n_layers)}
    width = max(len(p) for p in prompts)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("tokens", "last", "scores", "z", "mlp", "resid", "pat")}
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        tokens = torch.from_numpy(pad_batch(batch, rec.pad_id, width))  # one width: batches concatenate
        last = torch.tensor([len(p) - 1 for p in batch])
        logits, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name in wanted)
        missing = wanted - set(cache.keys())
        if missing:
            raise RuntimeError(f"hooks did not fire: {sorted(missing)}")
        rows = torch.arange(len(batch))
        at = lambda name: cache[name][rows, last]  # noqa: E731
        parts["tokens"].append(tokens)
        parts["last"].append(last)
        parts["scores"].append(logits[rows, last, rec.fmt.yes_id] - logits[rows, last, rec.fmt.no_id])
        parts["z"].append(torch.stack([at(hook_z(l)) for l in range(n_layers)], 1))
        parts["mlp"].append(torch.stack([at(hook_mlp_out(l)) for l in range(n_layers)], 1))
        parts["resid"].append(torch.stack([at(hook_resid_pre(l)) for l in range(n_layers)], 1))
        parts["pat"].append(torch.stack([cache[hook_pattern(l)][rows, :, last] for l in range(n_layers)], 1))
        progress("trace", min(start + batch_size, len(prompts)), len(prompts))
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return Trace(cat["tokens"], cat["last"], cat["scores"], cat["z"], cat["mlp"], cat["resid"], cat["pat"])
