"""bitcl's modules form no import cycle and import nothing private from one another.

The graph is read from the source with ``ast`` (every ``import`` statement, at module level or
inside a function: a lazy import still couples two modules), so the test needs no import and
runs in well under a second.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bitcl"


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every .py file of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(module: str, path: Path) -> list[tuple[str, str, int]]:
    """``(imported module, imported name or "", line)`` for every import of bitcl code in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "bitcl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "bitcl":
                out += [(target, a.name, node.lineno) for a in node.names]
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the bitcl modules it imports (``from pkg import submodule`` counts as the submodule)."""
    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, name, _ in imports(module, path):
            full = f"{target}.{name}" if name else target
            found = owner(full) if full in modules else owner(target)
            if found and found != module:
                graph[module].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
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
                    work.append((child, iter(sorted(graph[child]))))
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
    return found


def test_no_import_cycles_between_modules():
    """No two bitcl modules import each other, directly or through others (lazy imports included)."""
    assert cycles(import_graph(module_files())) == []


def test_no_private_names_imported_across_modules():
    """A name starting with one underscore is private to its module: no other bitcl module imports it."""
    modules = module_files()
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} from {target}"
                 for module, path in modules.items() for target, name, line in imports(module, path)
                 if name.startswith("_") and not name.startswith("__") and f"{target}.{name}" not in modules]
    assert offenders == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    """The checker itself fails on a graph with a cycle (and passes a tree)."""
    assert cycles(graph) == expected


def test_the_private_import_check_sees_relative_imports(tmp_path):
    """``from .sibling import _helper`` is recognised as an import of a private name of bitcl.x.sibling."""
    (tmp_path / "bitcl" / "x").mkdir(parents=True)
    (tmp_path / "bitcl" / "__init__.py").write_text("")
    (tmp_path / "bitcl" / "x" / "__init__.py").write_text("")
    (tmp_path / "bitcl" / "x" / "a.py").write_text("def f():\n    from .b import _helper\n")
    (tmp_path / "bitcl" / "x" / "b.py").write_text("from bitcl.x import a\n")
    modules = module_files(tmp_path / "bitcl")
    assert ("bitcl.x.b", "_helper", 2) in imports("bitcl.x.a", modules["bitcl.x.a"])
    assert cycles(import_graph(modules)) == [["bitcl.x.a", "bitcl.x.b"]]
