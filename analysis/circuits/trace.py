"""Tracing the recommender through TransformerLens 4's TransformerBridge.

Hook names (`blocks.{l}.attn.hook_z`, `blocks.{l}.hook_mlp_out`, ...) are the shared
vocabulary between analysis and UI. Everything is taken at the answer position (the
last real token of each right-padded prompt), where the score is read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..compute import current
from ..model.recommender import Recommender
from ..model.sequences import pad_batch
from ..progress import ProgressFn, or_silent
from .hooks import hook_mlp_out, hook_pattern, hook_resid_pre, hook_z
from .runner import GraphRunner


def load_bridge(rec: Recommender):
    """Wrap the saved HF folder of a recommender (offline) in a TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge

    if rec.path is None:
        raise ValueError("the recommender must be saved before it can be traced")
    compute = current()
    bridge = TransformerBridge.boot_transformers(str(rec.path), device=compute.device, dtype=compute.torch_dtype)
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
def trace_prompts(bridge, rec: Recommender, prompts: list[list[int]], batch_size: int | None = None,
                  progress: ProgressFn | None = None) -> Trace:
    progress = or_silent(progress)
    batch_size = batch_size or current().batch(256)
    n_layers = bridge.cfg.n_layers
    wanted = {hook_z(l) for l in range(n_layers)} | {hook_mlp_out(l) for l in range(n_layers)}
    wanted |= {hook_resid_pre(l) for l in range(n_layers)} | {hook_pattern(l) for l in range(n_layers)}
    width = max(len(p) for p in prompts)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("tokens", "last", "scores", "z", "mlp", "resid", "pat")}
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        tokens = torch.as_tensor(pad_batch(batch, rec.pad_id, width))  # one width: batches concatenate
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


@dataclass
class PromptTrace:
    """One prompt, read at its answer position: the score split into direct node effects, and attention."""

    tokens: list[int]
    score: float
    direct: dict[str, float]  # node -> its direct contribution to logit(Yes) - logit(No); "biases" holds the rest
    patterns: torch.Tensor  # (L, H, T, T) every head's attention over the prompt


def _final_norm(rec: Recommender):
    base = rec.model.base_model
    for name in ("ln_f", "norm", "final_layernorm"):
        if hasattr(base, name):
            return getattr(base, name)
    raise ValueError(f"cannot find the final norm of {type(base).__name__}")


@torch.no_grad()
def trace_one(bridge, rec: Recommender, prompt: list[int]) -> PromptTrace:
    """Direct logit attribution with the final norm's scale frozen at this prompt's value.

    Each node's output at the answer position goes through the final norm's linear part
    (centering for LayerNorm, none for RMSNorm; division by this run's scale; the norm's
    weight) onto the Yes-No unembedding direction. The node effects plus "biases" (norm
    bias, attention output biases, unembedding bias) add up to the score exactly.
    """
    runner = GraphRunner(bridge, rec)
    tokens = torch.tensor([prompt])
    last = len(prompt) - 1
    outputs = runner.outputs(tokens)[0, last]  # (n_up, d)
    wanted = {hook_pattern(l) for l in range(runner.n_layers)} | {"ln_final.hook_scale"}
    logits, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    norm = _final_norm(rec)
    head = rec.model.get_output_embeddings()
    direction = (head.weight[rec.fmt.yes_id] - head.weight[rec.fmt.no_id]) * norm.weight
    centred = outputs - outputs.mean(-1, keepdim=True) if isinstance(norm, torch.nn.LayerNorm) else outputs
    effects = centred / cache["ln_final.hook_scale"][0, last] @ direction
    score = float(logits[0, last, rec.fmt.yes_id] - logits[0, last, rec.fmt.no_id])
    direct = {n: float(e) for n, e in zip(runner.graph.upstream, effects)}
    direct["biases"] = score - sum(direct.values())
    patterns = torch.stack([cache[hook_pattern(l)][0] for l in range(runner.n_layers)]).float().cpu()  # for figures
    return PromptTrace(list(prompt), score, direct, patterns)


def token_labels(rec: Recommender, tokens: list[int], title) -> list[str]:
    """Readable labels for prompt tokens: item tokens become their titles (`title(item_id)`)."""
    labels = []
    for i, piece in enumerate(rec.tokenizer.convert_ids_to_tokens(tokens)):
        if piece.startswith("item_") and piece[5:].isdigit():
            piece = title(int(piece[5:]))
        labels.append(f"{i}:{piece.replace('Ġ', ' ').replace('Ċ', '↵')}")  # positions keep duplicate labels apart
    return labels
