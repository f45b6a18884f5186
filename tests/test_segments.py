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
