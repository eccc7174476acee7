"""The package's import graph: no cycles, and the library never imports the application.

Every module of ``hyperode`` is parsed with ``ast``; every import in it counts, at
module level and inside functions (also under ``if TYPE_CHECKING``), relative imports
resolved against the module's package. ``from pkg import name`` is an edge to the
submodule ``pkg.name`` when that is a module, else to ``pkg``. The application layer
is ``hyperode.experiments``, ``hyperode.cli`` and ``hyperode.__main__`` (README,
"Architecture"); everything else is the library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hyperode

PACKAGE_DIR = Path(hyperode.__file__).parent
APPLICATION = ("hyperode.experiments", "hyperode.cli", "hyperode.__main__")


def module_files(root: Path = PACKAGE_DIR) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def _owner(name: str, modules: dict) -> str | None:
    """The module ``name`` lives in (itself, or the nearest enclosing package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, is_package: bool, modules: dict
               ) -> dict[str, int]:
    """The package's modules ``module`` imports -> line of the first such import."""
    package = module if is_package else module.rpartition(".")[0]
    out: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target is not None and target != module:
            out.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "hyperode":
                    add(_owner(alias.name, modules), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level - 1 > len(base) - 1:
                    raise AssertionError(f"{path}:{node.lineno}: relative import above the "
                                         f"package")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "hyperode":
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                add(full if full in modules else _owner(source, modules), node.lineno)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    modules = module_files()
    return {name: imports_of(name, path, is_package, modules)
            for name, (path, is_package) in modules.items()}


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def is_application(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in APPLICATION)


GRAPH = import_graph()


def test_graph_sees_the_package():
    # the walk must find the layers it checks, and resolve relative imports to them
    assert {"hyperode.odeint", "hyperode.experiments.train", "hyperode.cli",
            "hyperode.solvers.tableau", "hyperode.adapt"} <= set(GRAPH)
    assert "hyperode.solvers.tableau" in GRAPH["hyperode.solvers"] or any(
        m.startswith("hyperode.solvers.") for m in GRAPH["hyperode.solvers"])
    assert "hyperode.odeint" in GRAPH["hyperode"]


def test_tarjan_finds_cycles():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}, "e": {}}
    components = sorted(strongly_connected(graph))
    assert components == [["a", "b", "c"], ["d"], ["e"]]


def test_walk_reads_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "hyperode"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..low import x\n"
                                         "    import hyperode.sub\n")
    modules = module_files(pkg)
    leaf = imports_of("hyperode.sub.leaf", *modules["hyperode.sub.leaf"], modules)
    assert leaf == {"hyperode.low": 2, "hyperode.sub": 3}
    sub = imports_of("hyperode.sub", *modules["hyperode.sub"], modules)
    assert sub == {"hyperode.sub.leaf": 1}


def test_no_import_cycles():
    cycles = [c for c in strongly_connected(GRAPH) if len(c) > 1]
    detail = []
    for component in cycles:
        members = set(component)
        detail.append("; ".join(f"{m} -> {t} (line {line})" for m in component
                                for t, line in sorted(GRAPH[m].items()) if t in members))
    assert not cycles, "import cycles:\n" + "\n".join(detail)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if not is_application(m)))
def test_library_does_not_import_the_application(module):
    upward = {t: line for t, line in GRAPH[module].items() if is_application(t)}
    assert not upward, f"{module} imports the application layer: {upward}"
