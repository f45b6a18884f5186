"""What each group is on a request, in one sentence read off the data (Circuits page, tour, CLI).

For item rows: how many, how many of them are forget-only by presence, and in what share
of each side's users' prompts they occur (median over the group's rows). For heads,
MLPs and roles: how many, and when none, what "none" means: the largest |log ratio| any
of them showed and the smallest log ratio the data could have detected (log(tau) plus
the half-width of the node's interval at the chosen level: a node is called specific
only when its interval clears log(tau)), over the nodes of that kind above the floor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .groups import Group
from .nodes import Kind
from .scores import NodeGroups

MODULE_KINDS = {Kind.HEAD.value: "head", Kind.MLP.value: "MLP", Kind.ROLE.value: "role", Kind.NEURON.value: "neuron"}


@dataclass(frozen=True)
class KindLimit:
    """For one kind of node, over those above the floor on either side: what the data showed and could show."""

    kind: str
    n_active: int
    largest_abs_estimate: float | None
    detectable: float | None  # the smallest |log ratio| any of them could have been called specific at


@dataclass(frozen=True)
class GroupSummary:
    group: str
    by_kind: dict[str, int]
    rows: int
    rows_by_presence: int  # forget-only by presence (forget group only)
    forget_users_share: float | None  # median share of each side's users whose prompts hold the group's rows
    retain_users_share: float | None
    limits: tuple[KindLimit, ...]  # for kinds with no member in this group
    sentence: str

    def as_dict(self) -> dict:
        return asdict(self)


def _pct(x: float) -> str:
    return "under 1%" if 0 < x < 0.01 else f"{x:.0%}"


def kind_limits(ng: NodeGroups) -> dict[str, KindLimit]:
    spec = ng.specificity()
    floors = ng.floor_shares()
    log_tau = float(np.log(ng.thresholds.tau))
    out = {}
    for kind in MODULE_KINDS:
        idx = [i for i, k in enumerate(ng.kinds) if k == kind
               and max(spec.forget_importance[i], spec.retain_importance[i]) >= floors[k]]
        if not idx:
            out[kind] = KindLimit(kind, 0, None, None)
            continue
        out[kind] = KindLimit(kind, len(idx), float(max(abs(spec.estimate[i]) for i in idx)),
                              float(log_tau + min(spec.half_width[i] for i in idx)))
    return out


def describe(ng: NodeGroups) -> list[GroupSummary]:
    labels = ng.labels
    f_present, r_present = ng.presence()
    presence = ng.draws[0].presence
    limits = kind_limits(ng)
    out = []
    for group in (Group.FORGET, Group.RETAIN, Group.SHARED):
        members = [i for i, n in enumerate(ng.names) if labels[n] is group]
        by_kind: dict[str, int] = {}
        for i in members:
            by_kind[ng.kinds[i]] = by_kind.get(ng.kinds[i], 0) + 1
        rows = [i for i in members if ng.kinds[i] == Kind.ITEM_ROW.value]
        by_presence = sum(1 for i in rows if ng.basis(i) == "presence")
        f_share = r_share = None
        parts = []
        if rows and presence is not None:
            f_share = float(np.median(f_present[rows]) / max(presence.n_forget_users, 1))
            r_share = float(np.median(r_present[rows]) / max(presence.n_retain_users, 1))
            text = f"{len(rows)} movie row{'s' if len(rows) != 1 else ''}"
            if group is Group.FORGET and by_presence:
                text += f" ({by_presence} forget-only by presence: no retained user's prompt holds them)"
            parts.append(text + f", each in the prompts of {_pct(f_share)} of the forget side's users and "
                                f"{_pct(r_share)} of the retain side's (medians)")
        present_kinds = [k for k in MODULE_KINDS if by_kind.get(k)]
        if present_kinds:
            parts.append(", ".join(f"{by_kind[k]} {MODULE_KINDS[k]}{'s' if by_kind[k] != 1 else ''}" for k in present_kinds))
        missing = tuple(limits[k] for k in MODULE_KINDS if not by_kind.get(k) and limits[k].n_active)
        if group is not Group.SHARED and missing:
            shown = [f"{MODULE_KINDS[m.kind]}s: largest |log ratio| {m.largest_abs_estimate:.2f}, the data would "
                     f"detect one above {m.detectable:.2f}" for m in missing]
            parts.append("no " + ", ".join(MODULE_KINDS[m.kind] for m in missing) + f" ({'; '.join(shown)})")
        if not members:
            parts.insert(0, "empty")
        out.append(GroupSummary(group.value, by_kind, len(rows), by_presence, f_share, r_share, missing,
                                f"{group.value}: " + "; ".join(parts) + "."))
    return out
