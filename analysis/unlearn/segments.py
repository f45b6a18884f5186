"""Per-block and per-node sums over gradient dicts in one vectorised pass.

A run measures three conflict maps and applies CURE's per-block rules at every step, over
every node of the table (1,700 on the default model, item rows included). Done node by
node in Python (slice, concatenate, dot) that was 60% of a CURE step's own arithmetic:
profiled over 30 steps on the default model, conflict maps 2.0 s and block rules 0.8 s
beside 5.9 s of forward and backward passes. Here every parameter element carries the id
of the one block that holds it (blocks partition the parameters, see nodes.py), so a
block's sum of a*b is one `index_add_`, and a node's sum is the sum over the blocks it
owns (shared blocks count under each owner, as `NodeTable.owners` lists them). Sums are
accumulated in float64: a projected update sits at cosine 0 +- rounding, and the conflict
threshold (1e-6) must not see float32 summation noise.

Off the CPU (read, never run here: no GPU was lent): `index_add_` on CUDA adds with atomics, so
its float sums change with the order threads land in; there the block sums are a segmented
reduction over the elements sorted by block once (`torch.segment_reduce`, no atomics), which
the CPU path equals (tests/test_segments.py). It is 5x slower than `index_add_` on the CPU
(36 ms against 7 ms for 1M elements x 2 sums), so the CPU keeps `index_add_`, deterministic
there. MPS has no float64: there the sums are float32, and the conflict threshold sees float32
rounding.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..circuits.nodes import NodeTable
from ..compute import accumulation_dtype

Grads = dict[str, torch.Tensor]


@dataclass(frozen=True)
class GroupSums:
    """Sums of the entries (rows) of a vector (matrix) that share a group id: `index_add_` on the CPU, or a
    segmented reduction over the entries sorted by group once (`sorted()`: no atomics, for accelerators)."""

    index: torch.Tensor  # per entry: its group
    n_groups: int
    order: torch.Tensor | None = None  # the sorted path: entries grouped by group...
    lengths: torch.Tensor | None = None  # ...and each group's entry count

    def sorted(self) -> "GroupSums":
        return dataclasses.replace(self, order=torch.argsort(self.index, stable=True),
                                   lengths=torch.bincount(self.index, minlength=self.n_groups))

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        if self.order is not None:
            return torch.segment_reduce(values[self.order], "sum", lengths=self.lengths, axis=0)
        out = torch.zeros((self.n_groups, *values.shape[1:]), dtype=values.dtype, device=values.device)
        return out.index_add_(0, self.index, values)


@dataclass(frozen=True)
class Segments:
    params: tuple[str, ...]  # parameter order of the flat vectors
    shapes: tuple[torch.Size, ...]
    element_block: torch.Tensor  # per element: its block (n_blocks for elements no block holds)
    n_blocks: int
    nodes: tuple[str, ...]  # table.owners order
    pair_node: torch.Tensor  # (node, block) ownership pairs
    pair_block: torch.Tensor
    to_blocks: GroupSums  # elements -> blocks (the last group: elements no block holds)
    to_nodes: GroupSums  # (node, block) pairs -> nodes

    @property
    def accumulate(self) -> torch.dtype:
        return accumulation_dtype(self.element_block.device)

    @property
    def by_block(self) -> torch.Tensor | None:
        """The element order of the sorted path (None: the CPU's index_add_)."""
        return self.to_blocks.order

    def flat(self, tensors: Grads) -> torch.Tensor:
        return torch.cat([tensors[n].reshape(-1) for n in self.params])

    def unflat(self, vector: torch.Tensor) -> Grads:
        out, offset = {}, 0
        for name, shape in zip(self.params, self.shapes):
            size = shape.numel()
            out[name] = vector[offset:offset + size].view(shape)
            offset += size
        return out

    def block_sums(self, *vectors: torch.Tensor) -> torch.Tensor:
        """Sum of elementwise vectors within each block, in the accumulation precision: (n_blocks,) for one
        vector, (n_blocks, k) for k. One 1-D sum per vector: a 2-D `index_add_` over (elements, 7) took 60 ms
        on the default model where seven 1-D ones take 16 ms."""
        sums = [self.to_blocks(values.to(self.accumulate)) for values in vectors]
        out = sums[0] if len(sums) == 1 else torch.stack(sums, dim=1)
        return out[: self.n_blocks]

    def node_sums(self, block_values: torch.Tensor) -> torch.Tensor:
        """A node's sum over the blocks it owns (shared blocks count under each owner)."""
        return self.to_nodes(block_values[self.pair_block])

    def sorted_path(self) -> "Segments":
        """The same segments summed by sorted segmented reduction (what non-CPU devices use)."""
        return dataclasses.replace(self, to_blocks=self.to_blocks.sorted(), to_nodes=self.to_nodes.sorted())

    def per_block(self, block_values: torch.Tensor) -> torch.Tensor:
        """A per-block value spread over the block's elements (0 outside every block)."""
        padded = torch.cat([block_values, block_values.new_zeros(1)])
        return padded[self.element_block]


_CACHE: dict[tuple, tuple[NodeTable, Segments]] = {}


def segments(table: NodeTable, like: Grads) -> Segments:
    """The segment index of `table` over parameters shaped like `like` (built once per table)."""
    device = next(iter(like.values())).device
    key = (id(table), device, tuple((n, tuple(t.shape)) for n, t in like.items()))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is table:
        return hit[1]
    params = tuple(like)
    shapes = tuple(like[n].shape for n in params)
    offsets, total = {}, 0
    for name, shape in zip(params, shapes):
        offsets[name] = total
        total += shape.numel()
    element_block = torch.full((total,), len(table.blocks), dtype=torch.long)
    flat_index = torch.arange(total)
    index = {name: flat_index[offsets[name]:offsets[name] + shape.numel()].view(shape)
             for name, shape in zip(params, shapes)}
    for b, block in enumerate(table.blocks):
        for s in block.slices:
            element_block[s.of(index[s.param]).reshape(-1)] = b
    nodes = tuple(table.owners)
    position = {n: i for i, n in enumerate(nodes)}
    pairs = [(position[o], b) for b, block in enumerate(table.blocks) for o in block.owners]
    element_block = element_block.to(device)
    pair_node = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=device)
    seg = Segments(params, shapes, element_block, len(table.blocks), nodes, pair_node,
                   torch.tensor([p[1] for p in pairs], dtype=torch.long, device=device),
                   GroupSums(element_block, len(table.blocks) + 1), GroupSums(pair_node, len(nodes)))
    if device.type != "cpu":
        seg = seg.sorted_path()
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[key] = (table, seg)
    return seg
