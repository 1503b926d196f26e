"""The architecture holds: the layers of pyproject.toml's [tool.importlinter] (front ends > core >
foundations; the relay and the sandbox beside them) and no import cycle anywhere in nb_model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")  # the one installed beside this Python (.venv)
    done = subprocess.run([str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds at least one import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit)
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def one_cycle(graph, component: list[str]) -> str:
    """One import cycle inside a component, as 'a -> b -> a' with the lines that import."""
    first = component[0]
    for other in component[1:]:
        there = graph.find_shortest_chain(importer=first, imported=other)
        back = graph.find_shortest_chain(importer=other, imported=first)
        if there and back:
            return " -> ".join(list(there) + list(back[1:]))
    return ", ".join(component)


def test_no_import_cycles():
    graph = grimp.build_graph("nb_model", include_external_packages=False, exclude_type_checking_imports=True)
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(one_cycle(graph, c) for c in found)


def test_the_cycle_check_sees_a_cycle():
    """The check itself: a graph with a cycle is reported, one without is not."""
    graph = grimp.ImportGraph()
    for importer, imported in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=importer, imported=imported)
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]
    graph.remove_import(importer="p.c", imported="p.a")
    assert cycles(graph) == []


def test_nothing_inside_imports_the_package_root():
    """`nb_model/__init__.py` is the public API on top of everything: no module of nb_model imports it."""
    graph = grimp.build_graph("nb_model", include_external_packages=False, exclude_type_checking_imports=True)
    assert not graph.find_modules_that_directly_import("nb_model")
