"""Graph-level forward passes through TransformerLens hooks: outputs, input gradients, patching.

The residual stream makes the graph exact: every reader's input is the sum of the outputs
of the nodes before it (plus constant biases). So

* a node's output is read at `blocks.0.hook_resid_pre` (input), `attn.hook_z` times the
  head's W_O (heads; `use_attn_result` is slow on CPU) and `hook_mlp_out` (MLPs);
* a node's input is written at `attn.hook_attn_in` (one residual copy per head, enabled
  with `set_use_attn_in`), `ln2.hook_in` (MLP) and `ln_final.hook_in` (logits).

One primitive, `patched_metric`, serves every intervention: each downstream input d has
Σ_u remove[u, d] · (out_u - corrupt_u) taken out, with out_u from the *same* run. A single
edge, a whole node (all its out-edges), the complement of a circuit and the empty circuit
(= the corrupted run) are all masks over the same (n_upstream x n_downstream) grid.

The metric is read through the Yes - No direction of the unembedding at `ln_final.hook_out`,
and the run stops there (TransformerLens's own StopAtLayerException): the full vocabulary's
logits are never computed. On a GPT-2-Large-shaped model (vocabulary 50,257, d 1280) the
unembedding of every position was more arithmetic than two transformer layers; on the default
model it is equal to the full-logit metric to float rounding (`tests/test_circuits.py`).
"""
from __future__ import annotations

import torch

from ..model.recommender import Recommender
from .graph import CircuitGraph
from .hooks import INPUT_HOOK, LOGITS_IN_HOOK, READOUT_HOOK, hook_attn_in, hook_mlp_in, hook_mlp_out, hook_z
from .nodes import Kind, NodeTable, hook_post
from .ownership import mlp_out_weight, recommender_table, vocab_roles


def _span(index: dict[str, int], names: list[str]) -> slice:
    """The columns of `names` (a layer's heads), which the table keeps contiguous."""
    cols = [index[n] for n in names]
    if cols != list(range(cols[0], cols[0] + len(cols))):
        raise ValueError(f"nodes {names} are not contiguous in the graph")
    return slice(cols[0], cols[-1] + 1)


class GraphRunner:
    """Runs batches of right-padded prompts through a bridge, node by node of the model's node table."""

    def __init__(self, bridge, rec: Recommender, table: NodeTable | None = None) -> None:
        self.bridge = bridge
        cfg = bridge.cfg
        self.table = table or recommender_table(rec)
        self.n_layers, self.n_heads = self.table.n_layers, self.table.n_heads
        if (self.n_layers, self.n_heads) != (int(cfg.n_layers), int(cfg.n_heads)):
            raise ValueError("the node table does not describe the bridged model")
        self.graph = CircuitGraph.from_table(self.table)
        if not getattr(cfg, "use_attn_in", False):
            bridge.set_use_attn_in(True)
        with torch.no_grad():
            self.w_o = [bridge.blocks[l].attn.W_O.detach() for l in range(self.n_layers)]  # (H, d_head, d)
        self.yes, self.no = rec.fmt.yes_id, rec.fmt.no_id
        from transformer_lens.model_bridge.exceptions import StopAtLayerException  # the bridge loaded it already

        self._stop = StopAtLayerException
        self.full_logits = False  # True: compute every logit and read the metric there (the readout's reference)
        with torch.no_grad():  # logit(Yes) - logit(No) = h . (W_U[:, yes] - W_U[:, no]) + (b_U[yes] - b_U[no])
            self.direction = (bridge.W_U[:, self.yes] - bridge.W_U[:, self.no]).detach()
            b_u = getattr(bridge, "b_U", None)
            self.offset = (b_u[self.yes] - b_u[self.no]).detach() if b_u is not None else 0.0
        self.pad_id = rec.pad_id
        up = {n: i for i, n in enumerate(self.graph.upstream)}
        down = {n: j for j, n in enumerate(self.graph.downstream)}
        heads = [[n.name for n in self.table.of_kind(Kind.HEAD) if n.layer == l] for l in range(self.n_layers)]
        mlps = [next(n.name for n in self.table.of_kind(Kind.MLP) if n.layer == l) for l in range(self.n_layers)]
        self._up_heads = [_span(up, h) for h in heads]
        self._down_heads = [_span(down, h) for h in heads]
        self._up_mlps = [up[m] for m in mlps]
        self._down_mlps = [down[m] for m in mlps]
        self._down_logits = down["logits"]
        # neuron nodes: what each MLP's hidden units write (units x d_model), to turn the gradient at the
        # MLP output into the gradient at its hidden activation without another backward pass
        self.neuron_layers = sorted({n.layer for n in self.table.of_kind(Kind.NEURON)})
        with torch.no_grad():
            self.w_out = {l: mlp_out_weight(rec.model, l).detach() for l in self.neuron_layers}
        # token id -> column among the item-row nodes (-1: not an item token), for per-row scores
        rows = {n.index: c for c, n in enumerate(self.table.of_kind(Kind.ITEM_ROW))}
        vocab = vocab_roles(rec)  # the same parsing of the vocabulary that split the embedding
        self.item_column = torch.full((max(rec.tokenizer.get_vocab().values()) + 1,), -1, dtype=torch.long)
        if rows and vocab is not None:
            for token, item in enumerate(vocab.item):
                if item in rows:
                    self.item_column[token] = rows[item]

    # column lookups in graph.upstream / graph.downstream, read off the node table
    def up_head(self, layer: int) -> slice:
        return self._up_heads[layer]

    def up_mlp(self, layer: int) -> int:
        return self._up_mlps[layer]

    def down_head(self, layer: int) -> slice:
        return self._down_heads[layer]

    def down_mlp(self, layer: int) -> int:
        return self._down_mlps[layer]

    @property
    def down_logits(self) -> int:
        return self._down_logits

    def full_logit_metric(self, logits: torch.Tensor, last: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """The metric from the full logits (what the readout replaces; kept as its test's reference)."""
        rows = torch.arange(len(last))
        return sign * (logits[rows, last, self.yes] - logits[rows, last, self.no])

    def _run(self, tokens: torch.Tensor, hooks: list[tuple[str, object]], last: torch.Tensor | None = None,
             sign: torch.Tensor | None = None) -> torch.Tensor | None:
        """Run with hooks that must fire. With `last` and `sign`: the metric per prompt, read off the
        normalised final residual at the answer position; without: nothing (outputs are in the hooks).
        Either way the run stops before the unembedding."""
        fired: set[str] = set()

        def tracked(name, fn):
            def hook(x, hook=None):
                fired.add(name)
                return fn(x)
            return name, hook

        def readout(x):
            if last is None:
                raise self._stop(None)
            h = x[torch.arange(len(last)), last]
            raise self._stop(sign * (h @ self.direction + self.offset))

        if not self.full_logits:
            hooks = [*hooks, (READOUT_HOOK, readout)]
        result = self.bridge.run_with_hooks(tokens, fwd_hooks=[tracked(n, f) for n, f in hooks])
        missing = {n for n, _ in hooks} - fired
        if missing:  # an attribution over a hook that never fired would be silently zero
            raise RuntimeError(f"hooks did not fire: {sorted(missing)}")
        if self.full_logits:
            return None if last is None else self.full_logit_metric(result, last, sign)
        return result

    def _head_result(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bthe,hed->bthd", z, self.w_o[layer])

    @torch.no_grad()
    def outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every upstream node's output at every position: (B, T, n_upstream, d_model)."""
        parts: dict[int, torch.Tensor] = {}

        def put(index, transform=lambda x: x):
            def fn(x):
                parts[index] = transform(x).detach()
                return x
            return fn

        hooks = [(INPUT_HOOK, put(0, lambda x: x[:, :, None]))]
        for l in range(self.n_layers):
            hooks.append((hook_z(l), put(self.up_head(l).start, lambda z, l=l: self._head_result(l, z))))
            hooks.append((hook_mlp_out(l), put(self.up_mlp(l), lambda x: x[:, :, None])))
        self._run(tokens, hooks)
        return torch.cat([parts[k] for k in sorted(parts)], dim=2)

    @torch.no_grad()
    def activations(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Hidden MLP activations of the layers with neuron nodes: (B, T, n_layers_with_neurons, width)."""
        if not self.neuron_layers:
            return None
        parts: dict[int, torch.Tensor] = {}

        def keep(layer):
            def fn(x):
                parts[layer] = x.detach()
                return x
            return fn

        self._run(tokens, [(hook_post(l), keep(l)) for l in self.neuron_layers])
        return torch.stack([parts[l] for l in self.neuron_layers], dim=2)

    def input_grads(self, tokens: torch.Tensor, last: torch.Tensor, sign: torch.Tensor,
                    input_override: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """d(Σ metric)/d(input of every downstream node): (B, T, n_downstream, d_model), and the metric.

        `input_override` replaces the embedding output (EAP-IG's interpolated inputs).
        """
        store: dict[int, torch.Tensor] = {}

        def keep(index):
            def fn(x):
                # a fresh tensor: `ln2.hook_in` hands us the residual itself, whose gradient would
                # also count the skip path; the copy only feeds this node
                store[index] = x.clone()
                return store[index]
            return fn

        hooks = []
        if input_override is not None:  # a leaf that needs grad, so layer 0's inputs stay differentiable
            override = input_override.detach().requires_grad_(True)
            hooks.append((INPUT_HOOK, lambda x: override))
        for l in range(self.n_layers):
            hooks.append((hook_attn_in(l), keep(self.down_head(l).start)))
            hooks.append((hook_mlp_in(l), keep(self.down_mlp(l))))
        hooks.append((LOGITS_IN_HOOK, keep(self.down_logits)))
        with torch.enable_grad():
            metric = self._run(tokens, hooks, last, sign)
            order = sorted(store)
            grads = torch.autograd.grad(metric.sum(), [store[k] for k in order])
        shaped = [g if g.dim() == 4 else g[:, :, None] for g in grads]
        return torch.cat(shaped, dim=2).detach(), metric.detach()

    @torch.no_grad()
    def patched_metric(self, tokens: torch.Tensor, last: torch.Tensor, sign: torch.Tensor,
                       corrupt: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
        """Metric per prompt with the edges in `remove` (bool, n_up x n_down) fed corrupted values."""
        remove = (remove & self.graph.allowed).float()
        live = remove.sum(1) > 0  # upstream nodes whose output must be tracked in this run
        diffs: dict[int, torch.Tensor] = {}  # upstream index -> out_u(this run) - corrupt_u

        def track(index, width, transform):
            def fn(x):
                if live[index : index + width].any():
                    diffs[index] = transform(x) - corrupt[:, :, index : index + width]
                return x
            return fn

        def subtract(down: slice | int):
            cols = remove[:, down]

            def fn(x):
                if not diffs:
                    return x
                idx = sorted(diffs)
                diff = torch.cat([diffs[i] for i in idx], dim=2)  # (B, T, n_tracked, d)
                ups = torch.cat([torch.arange(i, i + diffs[i].shape[2]) for i in idx])
                w = cols[ups].to(diff.dtype)  # the model's precision
                if x.dim() == 4:  # one input per head
                    return x - torch.einsum("btud,uh->bthd", diff, w)
                return x - torch.einsum("btud,u->btd", diff, w)
            return fn

        hooks = [(INPUT_HOOK, track(0, 1, lambda x: x[:, :, None]))]
        for l in range(self.n_layers):
            hooks.append((hook_attn_in(l), subtract(self.down_head(l))))
            hooks.append((hook_z(l), track(self.up_head(l).start, self.n_heads, lambda z, l=l: self._head_result(l, z))))
            hooks.append((hook_mlp_in(l), subtract(self.down_mlp(l))))
            hooks.append((hook_mlp_out(l), track(self.up_mlp(l), 1, lambda x: x[:, :, None])))
        hooks.append((LOGITS_IN_HOOK, subtract(self.down_logits)))
        return self._run(tokens, hooks, last, sign)

    @torch.no_grad()
    def patched_input(self, tokens: torch.Tensor, last: torch.Tensor, sign: torch.Tensor,
                      delta: torch.Tensor) -> torch.Tensor:
        """Metric per prompt with `delta` (B, T, d) taken out of the embedding output: patching an
        embedding role or item row = its positions fed their counterfactual input."""
        return self._run(tokens, [(INPUT_HOOK, lambda x: x - delta)], last, sign)

    @torch.no_grad()
    def clean_metric(self, tokens: torch.Tensor, last: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        return self._run(tokens, [], last, sign)
