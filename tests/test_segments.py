"""Parity: the vectorised conflict maps and CURE block rules against their node-by-node definitions."""
from __future__ import annotations

import pytest
import torch

from analysis.circuits.groups import Group, block_group
from analysis.circuits.ownership import recommender_table
from analysis.model.train import train_recommender
from analysis.unlearn.conflict import conflict_map
from analysis.unlearn.methods import RetainSpecific, circuit_rules, project_off
from analysis.unlearn.modules import flat, write_flat
from tests.conftest import TINY_MODEL, TINY_TRAIN


def _loop_conflict(table, f, r, names):
    """The definition: per node, concatenate its slices and take the cosine."""
    out = []
    for m in names:
        a, b = flat(f, table.owners[m]).double(), flat(r, table.owners[m]).double()
        na, nb = a.norm(), b.norm()
        out.append((float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0, float(na), float(nb)))
    return out


def _loop_rules(g_f, g_r, w, table, groups, option):
    """The definition, block by block."""
    d = {n: torch.zeros_like(t) for n, t in g_f.items()}
    fp = {n: torch.zeros_like(t) for n, t in g_f.items()}
    for block in table.blocks:
        group = block_group(block.owners, groups)
        if group is Group.INACTIVE or (group is Group.RETAIN and option is RetainSpecific.FREEZE):
            continue
        f, r = flat(g_f, block.slices), flat(g_r, block.slices)
        if group is Group.FORGET:
            fm, dm = f, f
        elif group is Group.SHARED:
            fm = project_off(f, r)
            dm = fm + w * r
        else:
            fm, dm = torch.zeros_like(f), w * r
        write_flat(d, block.slices, dm)
        write_flat(fp, block.slices, fm)
    return d, fp


@pytest.fixture
def setting(tiny_ws):
    rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    return rec, recommender_table(rec, neurons=True)  # neurons: MLP weights split into many blocks


def test_conflict_map_matches_the_node_by_node_cosines(setting):
    rec, table = setting
    torch.manual_seed(0)
    params = dict(rec.model.named_parameters())
    f = {n: torch.randn_like(p) for n, p in params.items()}
    r = {n: -0.5 * f[n] + torch.randn_like(p) for n, p in params.items()}
    f[next(iter(f))].zero_()  # a parameter with no gradient: nodes owning only it get cosine 0
    names = list(table.owners)
    fast = conflict_map(table, f, r)
    for (cos, fn, rn), c, a, b in zip(_loop_conflict(table, f, r, names), fast.cos, fast.forget_norm, fast.retain_norm):
        assert c == pytest.approx(cos, abs=1e-9) and a == pytest.approx(fn, rel=1e-9) and b == pytest.approx(rn, rel=1e-9)
    some = names[::7]
    assert conflict_map(table, f, r, some).modules == some


@pytest.mark.parametrize("option", list(RetainSpecific))
def test_block_rules_match_the_block_by_block_definition(setting, option):
    rec, table = setting
    torch.manual_seed(1)
    params = dict(rec.model.named_parameters())
    g_f = {n: torch.randn_like(p) for n, p in params.items()}
    g_r = {n: -g_f[n] + 0.5 * torch.randn_like(p) for n, p in params.items()}
    cycle = [Group.FORGET, Group.RETAIN, Group.SHARED, Group.INACTIVE, None]
    groups = {m: cycle[i % len(cycle)] for i, m in enumerate(table.owners) if cycle[i % len(cycle)] is not None}
    step = circuit_rules(g_f, g_r, 0.7, table, groups, option)
    d, fp = _loop_rules(g_f, g_r, 0.7, table, groups, option)
    for n in params:
        assert torch.allclose(step.direction[n], d[n], atol=1e-6), n
        assert torch.allclose(step.forget_part[n], fp[n], atol=1e-6), n
    moved = {m for m in table.owners if float(flat(fp, table.owners[m]).abs().sum()) > 0}
    assert set(step.updated) == moved and len(moved) > 0


def test_the_sorted_reduction_for_accelerators_equals_index_add(setting):
    """Off the CPU the block sums are a segmented reduction over elements sorted by block (no atomics);
    run here on the CPU, it must give the sums index_add gives."""
    from analysis.unlearn.segments import segments

    rec, table = setting
    params = dict(rec.model.named_parameters())
    torch.manual_seed(2)
    seg = segments(table, params)
    assert seg.by_block is None  # the CPU keeps index_add
    a, b = (torch.randn(sum(p.numel() for p in params.values())) for _ in range(2))
    fast, sorted_ = seg.block_sums(a, a * b), seg.sorted_path().block_sums(a, a * b)
    assert fast.shape == (seg.n_blocks, 2) and fast.dtype == torch.float64
    torch.testing.assert_close(sorted_, fast, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(seg.sorted_path().node_sums(sorted_), seg.node_sums(fast), atol=1e-9, rtol=1e-9)


def test_a_plan_built_once_gives_the_rules_of_every_later_step(setting):
    """CURE fixes its per-element coefficients once per run; a second step's gradients through the same
    plan give what the rules built afresh give."""
    from analysis.unlearn.methods import CircuitPlan

    rec, table = setting
    params = dict(rec.model.named_parameters())
    cycle = [Group.FORGET, Group.RETAIN, Group.SHARED, Group.INACTIVE]
    groups = {m: cycle[i % 4] for i, m in enumerate(table.owners)}
    torch.manual_seed(3)
    first = {n: torch.randn_like(p) for n, p in params.items()}
    plan = CircuitPlan.build(table, first, groups, 0.7, RetainSpecific.FREEZE)
    g_f = {n: torch.randn_like(p) for n, p in params.items()}
    g_r = {n: -g_f[n] + torch.randn_like(p) for n, p in params.items()}
    again, fresh = plan.step(g_f, g_r), circuit_rules(g_f, g_r, 0.7, table, groups, RetainSpecific.FREEZE)
    for n in params:
        assert torch.equal(again.direction[n], fresh.direction[n]) and torch.equal(again.forget_part[n], fresh.forget_part[n])
    assert again.updated == fresh.updated and again.rules == fresh.rules
