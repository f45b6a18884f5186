"""Edge and node attribution: EAP, EAP-IG and exact activation patching behind one entry point.

Every score estimates the same quantity, in units of the metric averaged over prompts:
score(u -> d) ≈ M(clean) - M(edge u -> d fed its corrupted value), so a positive score
means the edge carries evidence for the true label.

* EAP: (out_u - corrupt_u) · dM/d(in_d), one clean forward+backward and one corrupted
  forward per batch.
* EAP-IG: the same with dM/d(in_d) averaged over k inputs interpolated between the
  corrupted and the clean embedding (midpoint rule).
* patching: the ground truth, one patched forward per edge (or per node).

A node's EAP score is the sum of its out-edges' scores: its output enters the residual
stream once and every later reader sees it, so dM/d(out_u) = Σ_d dM/d(in_d).

The input node splits by position: each position's share (clean - corrupt input) ·
dM/d(input at that position) goes to the role of the token there (`emb:items`,
`emb:ratings`, ...) and, for an item token, to that item's embedding row (`row:<id>`),
so the roles add up to the input node and the item rows to `emb:items`. Exact patching
of a role or row feeds just its positions the counterfactual input. Counterfactuals keep
the prefix, the target and every position, so attributes, prompt words, positions and
target-only item rows score 0 under them by construction (mean ablation scores them).

Scores are kept per prompt (n_prompts x scored nodes): the grouping rule bootstraps them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterator

import torch

from ..compute import accumulation_dtype, current
from ..errors import SettingsError, parse_choice
from ..progress import ProgressFn, or_silent
from ..model.sequences import pad_batch
from .corrupt import PromptSet
from .nodes import Kind
from .runner import GraphRunner


class AttributionMethod(str, Enum):
    EAP = "eap"
    EAP_IG = "eap-ig"
    PATCHING = "patching"


def parse_attribution_method(value) -> AttributionMethod:
    return parse_choice(AttributionMethod, value, "method")


@dataclass(frozen=True)
class AttributionConfig:
    method: AttributionMethod = AttributionMethod.EAP_IG
    ig_steps: int = 8
    batch_size: int = 64  # bounds memory: activations are (batch, tokens, nodes, d_model)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse_attribution_method(self.method))
        if self.ig_steps < 1 or self.batch_size < 1:
            raise SettingsError("ig_steps and batch_size must be at least 1")


@dataclass
class Attribution:
    method: AttributionMethod
    edges: torch.Tensor  # (n_up, n_down), 0 where the residual stream has no edge
    nodes: torch.Tensor  # (n_up,)
    clean_metric: float  # mean metric of the full model
    corrupt_metric: float  # mean metric of the fully corrupted run
    n_prompts: int
    seconds: float
    per_prompt: torch.Tensor | None = None  # (n_prompts, n_scored): roles, modules, item rows (table.scored)


@dataclass
class Batch:
    tokens: torch.Tensor
    last: torch.Tensor
    sign: torch.Tensor
    corrupt: torch.Tensor  # upstream outputs of the corrupted run (B, T, n_up, d)
    codes: torch.Tensor  # (B, T) token-role code per position, -1 on padding
    start: int  # index of the batch's first prompt
    corrupt_acts: torch.Tensor | None = None  # hidden MLP activations of the corrupted run (neuron nodes only)


def position_codes(prompts: PromptSet, start: int, stop: int, width: int) -> torch.Tensor:
    codes = torch.full((stop - start, width), -1, dtype=torch.long)
    for b, i in enumerate(range(start, stop)):
        if prompts.roles is not None:
            codes[b, : len(prompts.roles[i])] = torch.as_tensor(prompts.roles[i])
    return codes


def split_input(runner: GraphRunner, contribution: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-position input scores (B, T) -> per-prompt role and item-row scores (B, n_roles + n_rows)."""
    table = runner.table
    roles = table.of_kind(Kind.ROLE)
    B = contribution.shape[0]
    out = torch.zeros(B, len(roles) + len(table.item_rows), dtype=contribution.dtype)
    for r, node in enumerate(roles):
        out[:, r] = (contribution * (batch.codes == node.index)).sum(1)
    if table.item_rows:
        cols = runner.item_column[batch.tokens]  # (B, T)
        hit = cols >= 0
        rows = torch.arange(B)[:, None].expand_as(cols)[hit]
        out.index_put_((rows, len(roles) + cols[hit]), contribution[hit], accumulate=True)
    return out


def scored_columns(runner: GraphRunner, modules: torch.Tensor, inputs: torch.Tensor,
                   neurons: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n_up - 1) module scores, (B, n_roles + n_rows) input splits and (B, n_neurons) neuron scores ->
    (B, n_scored) in table order (roles, modules, item rows, neurons)."""
    n_roles = len(runner.table.roles)
    parts = [inputs[:, :n_roles], modules, inputs[:, n_roles:]]
    if runner.table.neurons:
        if neurons is None:
            raise SettingsError("neuron nodes are scored by EAP and EAP-IG only (exact patching of 2,048 units per "
                                "prompt set is not offered); use --granularity modules with patching")
        parts.append(neurons)
    return torch.cat(parts, dim=1)


def neuron_scores(runner: GraphRunner, batch: Batch, grads: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Per prompt, (clean - corrupt hidden activation) x dM/d(activation) summed over positions, per unit.

    dM/d(activation) = W_out · dM/d(MLP output), and the MLP output's readers are its out-edges, so
    a layer's neuron scores add up to its MLP node's score exactly.
    """
    clean_acts = runner.activations(batch.tokens)
    out = []
    for k, layer in enumerate(runner.neuron_layers):
        g_out = (grads * allowed[runner.up_mlp(layer)][None, None, :, None]).sum(2)  # (B, T, d)
        g_act = g_out @ runner.w_out[layer].T.to(g_out.dtype)  # (B, T, width)
        out.append(((clean_acts[:, :, k] - batch.corrupt_acts[:, :, k]) * g_act).sum(1))
    return torch.cat(out, dim=1)


def iter_batches(runner: GraphRunner, prompts: PromptSet, batch_size: int) -> Iterator[Batch]:
    """Batches with their corrupted node outputs (a corrupted run, or the prompt-set mean)."""
    if len(prompts) == 0:
        raise ValueError("attribution needs at least one prompt")
    width = max(len(p) for p in prompts.clean)
    mean = mean_acts = None
    if prompts.corrupt is None:  # mean ablation: one pass for the mean output of every node
        total = total_acts = None
        for start in range(0, len(prompts), batch_size):
            toks = torch.as_tensor(pad_batch(prompts.clean[start : start + batch_size], runner.pad_id, width))
            out, acts = runner.outputs(toks), runner.activations(toks)
            total = out.sum(0) if total is None else total + out.sum(0)
            if acts is not None:
                total_acts = acts.sum(0) if total_acts is None else total_acts + acts.sum(0)
        mean = total / len(prompts)
        mean_acts = None if total_acts is None else total_acts / len(prompts)
    for start in range(0, len(prompts), batch_size):
        codes = position_codes(prompts, start, min(start + batch_size, len(prompts)), width)
        stop = start + batch_size
        tokens = torch.as_tensor(pad_batch(prompts.clean[start:stop], runner.pad_id, width))
        last = torch.tensor([len(p) - 1 for p in prompts.clean[start:stop]])
        sign = torch.as_tensor(prompts.labels[start:stop]).float() * 2 - 1
        if mean is None:
            corrupt_tokens = torch.as_tensor(pad_batch(prompts.corrupt[start:stop], runner.pad_id, width))
            corrupt, corrupt_acts = runner.outputs(corrupt_tokens), runner.activations(corrupt_tokens)
        else:
            corrupt = mean.expand(len(tokens), *mean.shape)
            corrupt_acts = None if mean_acts is None else mean_acts.expand(len(tokens), *mean_acts.shape)
        yield Batch(tokens, last, sign, corrupt, codes, start, corrupt_acts)


def _gradient_scores(runner: GraphRunner, prompts: PromptSet, cfg: AttributionConfig, progress: ProgressFn):
    steps = 1 if cfg.method is AttributionMethod.EAP else cfg.ig_steps
    graph = runner.graph
    edges = torch.zeros(graph.allowed.shape)
    per_prompt = []
    allowed = graph.allowed.float()
    clean_sum = corrupt_sum = 0.0
    done = 0
    for batch in iter_batches(runner, prompts, cfg.batch_size):
        clean = runner.outputs(batch.tokens)
        grads = torch.zeros(*clean.shape[:2], len(graph.downstream), clean.shape[3])
        for k in range(steps):
            override = None
            if cfg.method is AttributionMethod.EAP_IG:
                alpha = (k + 0.5) / steps
                override = batch.corrupt[:, :, 0] + alpha * (clean[:, :, 0] - batch.corrupt[:, :, 0])
            g, metric = runner.input_grads(batch.tokens, batch.last, batch.sign, override)
            grads += g / steps
            if override is None:
                clean_sum += float(metric.sum())
        if override is not None:
            clean_sum += float(runner.clean_metric(batch.tokens, batch.last, batch.sign).sum())
        diff = (clean - batch.corrupt).float()  # scores accumulate in float32 whatever the model's precision
        per_edge = torch.einsum("btud,btkd->buk", diff, grads) * allowed
        edges += per_edge.sum(0)
        # the input's share per position: its readers are every downstream node
        at_input = torch.einsum("btd,btkd->bt", diff[:, :, 0], grads * allowed[0][None, None, :, None])
        neurons = neuron_scores(runner, batch, grads, allowed) if runner.neuron_layers else None
        per_prompt.append(scored_columns(runner, per_edge.sum(2)[:, 1:], split_input(runner, at_input, batch), neurons))
        corrupt_sum += float(runner.patched_metric(batch.tokens, batch.last, batch.sign, batch.corrupt,
                                                   graph.allowed).sum())
        done += len(batch.tokens)
        progress(cfg.method.value, done, len(prompts))
    n = len(prompts)
    edges = torch.where(graph.allowed, edges / n, torch.zeros_like(edges))
    return edges, edges.sum(1), clean_sum / n, corrupt_sum / n, torch.cat(per_prompt)


def _masks_for_edges(runner: GraphRunner) -> list[torch.Tensor]:
    masks = []
    for i, j in torch.nonzero(runner.graph.allowed).tolist():
        m = torch.zeros_like(runner.graph.allowed)
        m[i, j] = True
        masks.append(m)
    return masks


def _masks_for_nodes(runner: GraphRunner) -> list[torch.Tensor]:
    masks = []
    for i in range(len(runner.graph.upstream)):
        m = torch.zeros_like(runner.graph.allowed)
        m[i] = True
        masks.append(m)
    return masks


def patch_per_prompt(runner: GraphRunner, prompts: PromptSet, masks: list[torch.Tensor], batch_size: int = 64,
                     progress: ProgressFn | None = None, stage: str = "patching") -> tuple[torch.Tensor, torch.Tensor]:
    """M(clean) - M(patched) per removal mask and prompt (n_masks, n_prompts), and M(clean) per prompt."""
    progress = or_silent(progress)
    precision = accumulation_dtype(current().device)  # float64, but MPS has none
    effects = torch.zeros(len(masks), len(prompts), dtype=precision)
    clean_all = torch.zeros(len(prompts), dtype=precision)
    n_batches = -(-len(prompts) // batch_size)
    for b, batch in enumerate(iter_batches(runner, prompts, batch_size)):
        rows = slice(batch.start, batch.start + len(batch.tokens))
        clean = runner.clean_metric(batch.tokens, batch.last, batch.sign)
        clean_all[rows] = clean.to(precision)
        for m, mask in enumerate(masks):
            patched = runner.patched_metric(batch.tokens, batch.last, batch.sign, batch.corrupt, mask)
            effects[m, rows] = (clean - patched).to(precision)
            progress(stage, b * len(masks) + m + 1, n_batches * len(masks))
    return effects, clean_all


def patch_effects(runner: GraphRunner, prompts: PromptSet, masks: list[torch.Tensor], batch_size: int = 64,
                  progress: ProgressFn | None = None, stage: str = "patching") -> tuple[torch.Tensor, float]:
    """M(clean) - M(patched) for each removal mask (mean over prompts), and M(clean)."""
    effects, clean = patch_per_prompt(runner, prompts, masks, batch_size, progress, stage)
    return effects.mean(1), float(clean.mean())


def patch_nodes(runner: GraphRunner, prompts: PromptSet, batch_size: int = 64,
                progress: ProgressFn | None = None, nodes: list[int] | None = None) -> torch.Tensor:
    """Exact node patching: each upstream node's output (or those at the `nodes` indices) replaced by its
    corrupted value."""
    masks = _masks_for_nodes(runner)
    masks = masks if nodes is None else [masks[i] for i in nodes]
    effects, _ = patch_effects(runner, prompts, masks, batch_size, progress, "node patching")
    return effects.float()


def patch_embedding_nodes(runner: GraphRunner, prompts: PromptSet, names: list[str], batch_size: int = 64,
                          progress: ProgressFn | None = None) -> torch.Tensor:
    """Exact patching of role and item-row nodes, per prompt (n_names, n_prompts): each node's
    positions fed the counterfactual input, everything else clean."""
    progress = or_silent(progress)
    table = runner.table
    effects = torch.zeros(len(names), len(prompts), dtype=accumulation_dtype(current().device))
    n_batches = -(-len(prompts) // batch_size)
    for b, batch in enumerate(iter_batches(runner, prompts, batch_size)):
        rows = slice(batch.start, batch.start + len(batch.tokens))
        clean_in = runner.outputs(batch.tokens)[:, :, 0]
        diff = clean_in - batch.corrupt[:, :, 0]
        clean = runner.clean_metric(batch.tokens, batch.last, batch.sign)
        columns = runner.item_column[batch.tokens]
        for k, name in enumerate(names):
            node = table[name]
            if node.kind is Kind.ROLE:
                where = batch.codes == node.index
            elif node.kind is Kind.ITEM_ROW:
                where = columns == table.item_rows.index(name)
            else:
                raise ValueError(f"{name} is not an embedding role or item row")
            if where.any():  # a node absent from the batch has no effect on it
                patched = runner.patched_input(batch.tokens, batch.last, batch.sign, diff * where[..., None])
                effects[k, rows] = (clean - patched).to(effects.dtype)
            progress("embedding patching", b * len(names) + k + 1, n_batches * len(names))
    return effects


def _patching_scores(runner: GraphRunner, prompts: PromptSet, cfg: AttributionConfig, progress: ProgressFn):
    graph = runner.graph
    masks = _masks_for_edges(runner) + _masks_for_nodes(runner) + [graph.allowed.clone()]
    effects, clean = patch_per_prompt(runner, prompts, masks, cfg.batch_size, progress, "edge patching")
    n_edges, n_up = graph.n_edges, len(graph.upstream)
    means = effects.mean(1)
    edges = torch.zeros(graph.allowed.shape)
    edges[graph.allowed] = means[:n_edges].float()  # nonzero() and boolean indexing share row-major order
    nodes = means[n_edges : n_edges + n_up].float()
    table = runner.table
    inputs = patch_embedding_nodes(runner, prompts, table.roles + table.item_rows, cfg.batch_size, progress)
    per_prompt = scored_columns(runner, effects[n_edges + 1 : n_edges + n_up].T.float(), inputs.T.float())
    return edges, nodes, float(clean.mean()), float(clean.mean() - means[-1]), per_prompt


ALGORITHMS: dict[AttributionMethod, Callable] = {
    AttributionMethod.EAP: _gradient_scores,
    AttributionMethod.EAP_IG: _gradient_scores,
    AttributionMethod.PATCHING: _patching_scores,
}


def attribute(runner: GraphRunner, prompts: PromptSet, cfg: AttributionConfig | None = None,
              progress: ProgressFn | None = None) -> Attribution:
    """Score every edge and node of the runner's graph on a prompt set with the chosen method."""
    cfg = cfg or AttributionConfig()
    start = time.perf_counter()
    edges, nodes, clean, corrupt, per_prompt = ALGORITHMS[AttributionMethod(cfg.method)](runner, prompts, cfg, or_silent(progress))
    return Attribution(AttributionMethod(cfg.method), edges, nodes, clean, corrupt, len(prompts), time.perf_counter() - start,
                       per_prompt)
