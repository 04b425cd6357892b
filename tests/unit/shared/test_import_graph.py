"""Architecture guard: the package's import graph has no cycles, between modules or between packages.

A cycle is two modules that each need the other to be imported first:
whichever loads first sees the other half-initialised, and a deferred
(function-level) import only hides that until the function runs. So every
import that runs counts here, at module level or inside a function; only
imports under ``if TYPE_CHECKING:`` are left out (the type checker reads
them, the interpreter never does). Packages (``proxy.config``,
``proxy.policy``, ...) must not form a cycle either: a subpackage that
reaches back into the one that depends on it is the first step to a
module cycle.

An edge goes to the module actually named: ``from proxy.connection import
events`` is an edge to ``proxy.connection.events``, not to the package's
``__init__`` (which Python has already started by then).
"""

from __future__ import annotations

import ast
import pathlib

import proxy

ROOT = pathlib.Path(proxy.__file__).parent


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module this one imports when it runs (anywhere but under ``if TYPE_CHECKING``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[:len(here) - (node.level - 1)]
                base = ".".join(here + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
    """module -> the package's own modules it imports (the longest known prefix of each import)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for imported in _imported_names(ast.parse(path.read_text(), str(path)), name,
                                        path.name == "__init__.py", known):
            parts = imported.split(".")
            for k in range(len(parts), 0, -1):
                candidate = ".".join(parts[:k])
                if candidate in known:
                    if candidate != name:
                        deps.add(candidate)
                    break
        graph[name] = deps
    return graph


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between ``proxy.<x>`` units (a subpackage, or a top-level module)."""
    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        out.setdefault(unit(module), set()).update(unit(d) for d in deps if unit(d) != unit(module))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def _explain(graph: dict[str, set[str]], component: list[str]) -> str:
    inside = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph.get(a, ())) if b in inside]
    return "; ".join(edges)


def test_the_graph_sees_the_package() -> None:
    graph = import_graph(ROOT)
    assert "proxy.runtime.runner" in graph and "proxy.connection.machine" in graph["proxy.runtime.runner"]
    # a deferred import counts (run_sidecar picks its driver), a TYPE_CHECKING one does not
    assert "proxy.runtime.trio_driver" in graph["proxy.sidecar"]
    assert "proxy.runtime.base" not in graph["proxy.runtime.served"]


def test_the_guard_finds_a_cycle_hidden_in_a_function(tmp_path: pathlib.Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    assert cycles(package_graph(graph)) == [["pkg.a", "pkg.sub"]]


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph(ROOT)
    found = cycles(graph)
    assert found == [], "import cycles: " + " | ".join(_explain(graph, c) for c in found)


def test_no_package_depends_on_itself_through_others() -> None:
    graph = package_graph(import_graph(ROOT))
    found = cycles(graph)
    assert found == [], "package cycles: " + " | ".join(_explain(graph, c) for c in found)
