"""The floors of the house, read from the code: every module's imports (ast, lazy ones inside
functions included, since a lazy import is still a dependency), and the exact-number helper.

Rules (issue 24, "Floors"):
- no import cycle among unstable's modules;
- the drivers (trainer.py, live/, render/, cli.py) are imported by drivers only: the systems
  (equilibrium/, divergence/, system.py, bending.py, directions.py, walk.py), frame/ and everything
  else below them import nothing from them;
- render/ imports nothing from live/ (two sibling drivers of frame/);
- control/ imports nothing from frame/, live/ or display/ (it only writes into the parameter store);
- exact numbers from decimals through one helper, `formats.exact`, never `Fraction(repr(...))` by hand.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent / "unstable"
DRIVERS = ("unstable.trainer", "unstable.live", "unstable.render", "unstable.explore", "unstable.cli",
           "unstable.__main__")
SYSTEMS = ("unstable.equilibrium", "unstable.divergence", "unstable.system", "unstable.bending",
           "unstable.directions", "unstable.walk", "unstable.instruments", "unstable.clusters")


def _modules() -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package's __init__)} of every module under unstable/."""
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (f, package)
    return out


def _targets(name: str, package: bool, node, modules) -> list[str]:
    """The unstable modules one import statement names (`from .x import y` is x.y when y is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "unstable"]
    if node.level:
        base = name.split(".") if package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
        if mod.split(".")[0] != "unstable":
            return []
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """{module: the unstable modules it imports}, every import statement in the file counted."""
    modules = _modules()
    graph = {}
    for name, (f, package) in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for d in _targets(name, package, node, modules):
                    while d not in modules and "." in d:  # `from x import function`: the module x
                        d = d.rsplit(".", 1)[0]
                    if d in modules and d != name:
                        deps.add(d)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _breaches(graph, importer, imported) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in graph.items() if importer(m) for d in deps if imported(d))


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_top_level_and_lazy_imports(graph):
    # Without these the rules below could pass on a graph that reads nothing.
    assert "unstable.checkpoint" in graph["unstable.trainer"]  # top level, relative
    assert "unstable.trainer" in graph["unstable.cli"]  # lazy, inside a command
    assert "unstable.frame.pipeline" in graph["unstable.live.engine"] or any(
        _in(d, ("unstable.frame",)) for d in graph["unstable.live.engine"])
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_only_drivers_import_drivers(graph):
    # The artworks and the frame pipeline stand below the drivers that run them.
    assert _breaches(graph, lambda m: not _in(m, DRIVERS), lambda d: _in(d, DRIVERS)) == []
    assert _breaches(graph, lambda m: _in(m, SYSTEMS + ("unstable.frame",)), lambda d: _in(d, DRIVERS)) == []


def test_render_imports_nothing_from_live(graph):
    assert _breaches(graph, lambda m: _in(m, ("unstable.render",)), lambda d: _in(d, ("unstable.live",))) == []


def test_control_imports_nothing_above_it(graph):
    above = ("unstable.frame", "unstable.live", "unstable.display")
    assert _breaches(graph, lambda m: _in(m, ("unstable.control",)), lambda d: _in(d, above)) == []


def test_exact_numbers_come_from_one_helper():
    by_hand = re.compile(r"Fraction\((repr|str)\(")
    found = [f"{f.relative_to(ROOT.parent)}:{i}" for f in sorted(ROOT.rglob("*.py"))
             for i, line in enumerate(f.read_text().splitlines(), 1) if by_hand.search(line)]
    assert [f for f in found if not f.startswith("unstable/formats.py:")] == []  # formats.exact itself


def test_exact_reads_decimals_as_written():
    from unstable.formats import exact
    assert exact(29.97) == Fraction(2997, 100)
    assert exact(np.float64(29.97)) == Fraction(2997, 100)  # numpy's repr is not a decimal
    assert exact("30000/1001") == Fraction(30000, 1001) and exact(Fraction(24000, 1001)) == Fraction(24000, 1001)
    assert exact(25) == 25 and exact(np.int64(25)) == 25
    for bad in (True, float("inf"), float("nan"), None, "x"):
        with pytest.raises((ValueError, TypeError)):
            exact(bad)


def test_a_float_fps_gives_the_audio_columns_of_its_decimal():
    # 29.97 is 2997/100 to the artist; its binary float is a hair below, which moved the first
    # STFT column of frame 999 (6250 columns in, exactly on the boundary) one column later.
    from unstable.audio.features import frame_columns, frame_columns_many, frame_count
    assert frame_columns(999, 29.97) == frame_columns(999, Fraction(2997, 100)) == (6250, 6257)
    a, b = frame_columns_many(np.array([999]), 29.97)
    assert (int(a[0]), int(b[0])) == (6250, 6257)
    assert frame_count(48_000 * 100, 29.97) == frame_count(48_000 * 100, Fraction(2997, 100)) == 2997


def test_no_module_over_400_lines_and_no_class_over_250():
    # A module or a class past these sizes does more than one thing (issue 24's floor).
    big = []
    for f in sorted(ROOT.rglob("*.py")):
        text = f.read_text()
        if text.count("\n") > 400:
            big.append(f"{f.relative_to(ROOT.parent)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250:
                big.append(f"{f.relative_to(ROOT.parent)}: class {node.name} {node.end_lineno - node.lineno + 1} lines")
    assert big == []
