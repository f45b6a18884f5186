"""The import structure: no cycles in analysis/, no upward arrows between its layers, no UI in analysis/, and
tests/ and benchmarks/ share what they need through support/ instead of importing each other (issue 27).

Imports are read with `ast` from the source, every one of them: at module level, inside functions (a
deferred import is still an arrow, and dodging a cycle with one only hides it) and under `if TYPE_CHECKING`.
Imports built from strings (importlib) are not seen; the code has none.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREES = ("analysis", "app", "tests", "benchmarks", "support")

# analysis/, lowest first. A unit (a top-level module, or a subpackage with everything in it) may import units
# in lower layers only: not a higher one (an upward arrow) and not another unit of its own layer (a sideways
# one), so each layer can be understood, changed and tested with only the layers below it. Inside a unit,
# any import is allowed that makes no cycle (test_no_import_cycles_in_analysis). Why this order:
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "clock", "config", "metrics", "pareto"),  # leaves: import nothing from analysis/
    ("compute", "baselines"),  # devices and precision (-> errors); the bias baseline (-> metrics)
    ("jobs",),  # the job queue: below the cache, whose build_or_load runs every build in one of its slots
    ("cache",),  # content-addressed artefacts; config_key reads the compute settings
    ("progress",),  # the one progress model; stage costs are cached (cache/timings.json)
    ("data",),  # loaders, the split, deletion requests
    ("workspace",),  # a dataset with its split and cache folder
    ("model",),  # the recommender, its training, and what training and everything above share:
    #              evaluate.py (training evaluates each epoch) and objectives.py (scores and losses that
    #              circuits/coverage.py and unlearn/ both use)
    ("recommend",),  # top-k recommendations of a trained model
    ("circuits",),  # circuit discovery, groups; reads the model
    ("unlearn",),  # unlearning runs steered by the circuits
    ("study",),  # the evidence study: grids of unlearning runs
    ("cli", "tour", "watched"),  # entry points and the app's job wrapper
)


def _modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every .py file under the trees (a package's __init__ under the package's name)."""
    out = {}
    for tree in TREES:
        for path in sorted((root / tree).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported name, line) of every import in the file, relative ones made absolute. `from m import x` names
    m.x when that is a module of the checkout, else m (x is an attribute of m)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.append((f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module, node.lineno))
    return found


def _owner(target: str, known: set[str]) -> str | None:
    """The checkout's module an imported name lives in (None: a third-party or standard module)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """(module -> the checkout's modules it imports, module -> every (imported name, line) it imports)."""
    mods = _modules(root)
    known = set(mods)
    edges: dict[str, set[str]] = defaultdict(set)
    raw = {}
    for name, path in mods.items():
        raw[name] = _imports(name, path, known)
        for target, _ in raw[name]:
            owner = _owner(target, known)
            if owner is not None and owner != name:
                edges[name].add(owner)
    return edges, raw


def cycles(edges: dict[str, set[str]], within: str) -> list[list[str]]:
    """One concrete cycle (a -> b -> ... -> a) per strongly connected component of the modules under `within`."""
    nodes = sorted({m for m in edges if m.split(".")[0] == within}
                   | {t for ts in edges.values() for t in ts if t.split(".")[0] == within})
    inside = {m: sorted(t for t in edges.get(m, ()) if t.split(".")[0] == within) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(v: str) -> None:  # Tarjan; the graph is a few hundred modules, well within the recursion limit
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in inside[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in nodes:
        if v not in index:
            connect(v)
    found = []
    for component in components:  # a shortest way round, from the component's first module, for the message
        start = min(component)
        came_from: dict[str, str | None] = {start: None}
        order = [start]
        for here in order:  # breadth first: `order` grows as it is walked
            if start in inside[here]:
                path = [here]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                found.append(path[::-1] + [start])
                break
            for there in inside[here]:
                if there in component and there not in came_from:
                    came_from[there] = here
                    order.append(there)
    return found


def unit_of(module: str) -> str | None:
    """analysis.data.loaders -> "data", analysis.cache -> "cache"; the bare package `analysis` has no unit."""
    parts = module.split(".")
    return parts[1] if parts[0] == "analysis" and len(parts) > 1 else None


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    rank = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    bad = []
    for module in sorted(edges):
        here = unit_of(module)
        if here is None:
            continue
        for target in sorted(edges[module]):
            there = unit_of(target)
            if there == here or here not in rank or there not in rank:  # unlisted: see unlisted_units
                continue
            if rank[there] > rank[here]:
                bad.append(f"{module} -> {target}: upward ({here}, layer {rank[here]}, imports {there}, "
                           f"layer {rank[there]})")
            elif rank[there] == rank[here]:
                bad.append(f"{module} -> {target}: sideways ({here} and {there} share layer {rank[here]})")
    return bad


def unlisted_units(root: Path) -> list[str]:
    units = {unit_of(m) for m in _modules(root)} - {None}
    return sorted(units - {unit for layer in LAYERS for unit in layer})


def forbidden_imports(raw: dict[str, list[tuple[str, int]]], importer: str, forbidden: set[str]) -> list[str]:
    """`module:line imports name` for every import under the `importer` tree whose top-level name is forbidden."""
    return [f"{module}:{line} imports {target}" for module in sorted(raw) if module.split(".")[0] == importer
            for target, line in raw[module] if target.split(".")[0] in forbidden]


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_no_import_cycles_in_analysis(graph):
    edges, _ = graph
    found = cycles(edges, "analysis")
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_every_analysis_unit_has_a_layer():
    missing = unlisted_units(ROOT)
    assert not missing, f"add to LAYERS in {Path(__file__).name}, at the layer it belongs to: {missing}"


def test_no_upward_or_sideways_imports_between_analysis_layers(graph):
    edges, _ = graph
    bad = layer_violations(edges)
    assert not bad, "\n".join(bad)


def test_analysis_never_imports_the_ui_or_the_test_scaffolding(graph):
    _, raw = graph
    bad = forbidden_imports(raw, "analysis", {"streamlit", "app", "tests", "benchmarks", "support"}) \
        + forbidden_imports(raw, "app", {"tests", "benchmarks", "support"})
    assert not bad, "\n".join(bad)


def test_tests_and_benchmarks_share_support_and_never_import_each_other(graph):
    _, raw = graph
    bad = forbidden_imports(raw, "tests", {"benchmarks"}) + forbidden_imports(raw, "benchmarks", {"tests"}) \
        + forbidden_imports(raw, "support", {"tests", "benchmarks"})  # support sits below both
    assert not bad, "what tests/ and benchmarks/ share belongs in support/:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_guard_against(tmp_path):
    """The checks above, on a made-up tree holding one of each knot: they must fail on it."""
    files = {
        "analysis/__init__.py": "",
        "analysis/cache.py": "from .jobs import JobQueue\n",
        "analysis/jobs.py": "def slot():\n    from .cache import pid_alive  # deferred: still a cycle\n",
        "analysis/circuits/__init__.py": "",
        "analysis/circuits/coverage.py": "from ..unlearn.objectives import ga_loss\n",
        "analysis/unlearn/__init__.py": "",
        "analysis/unlearn/objectives.py": "from ..model import recommender\n",
        "analysis/model/__init__.py": "",
        "analysis/model/recommender.py": "import streamlit as st\n",
        "analysis/study/__init__.py": "from .grid import run\n",
        "analysis/study/grid.py": "from . import summary\n",
        "analysis/study/summary.py": "",
        "analysis/newthing.py": "",
        "analysis/cli.py": "",
        "analysis/tour.py": "from .cli import main\n",
        "tests/test_x.py": "from benchmarks.bench_x import harness\n",
        "benchmarks/bench_x.py": "from tests.conftest import subset\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    for tree in TREES:
        (tmp_path / tree).mkdir(exist_ok=True)
    edges, raw = import_graph(tmp_path)
    assert cycles(edges, "analysis") == [["analysis.cache", "analysis.jobs", "analysis.cache"]]
    # objectives -> model is downward, and study importing its own modules is fine
    assert layer_violations(edges) == [
        "analysis.circuits.coverage -> analysis.unlearn.objectives: upward (circuits, layer 9, imports unlearn, "
        "layer 10)",
        "analysis.jobs -> analysis.cache: upward (jobs, layer 2, imports cache, layer 3)",
        "analysis.tour -> analysis.cli: sideways (tour and cli share layer 12)"]
    assert unlisted_units(tmp_path) == ["newthing"]
    assert forbidden_imports(raw, "analysis", {"streamlit"}) == ["analysis.model.recommender:1 imports streamlit"]
    assert forbidden_imports(raw, "tests", {"benchmarks"}) == ["tests.test_x:1 imports benchmarks.bench_x"]
    assert forbidden_imports(raw, "benchmarks", {"tests"}) == ["benchmarks.bench_x:1 imports tests.conftest"]
