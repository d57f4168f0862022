"""The package's static import graph and its floors: what ``tests/test_layout.py`` checks and what
``docs/import_graph.py`` draws.

The graph is read from the source with :mod:`ast`; no module is imported. A node is a ``.py`` file, named as
Python names it (``minivid.nn.attention``; ``minivid.nn`` for ``nn/__init__.py``). An edge is an ``import`` or
``from ... import`` statement anywhere in the file (inside functions too), relative imports resolved, kept only
when it leads to a module of the package. ``from . import kernels`` and ``from .x import y`` lead to the submodule
when the imported name is one; otherwise to the module the names come from. Python also runs the parent packages'
``__init__.py`` on the way, but that is not counted as an edge. Imports made at run time with :mod:`importlib`
(``minivid.kernels``' lazy names, ``load_model`` finding a model class by name) are not seen.

:data:`FLOORS` is the one definition of the layers (docs/architecture.md explains them): a package imports only
from packages on strictly lower floors, or from inside itself. The root ``minivid/__init__.py`` is exempt (it
re-exports ``save_model`` / ``load_model``).
"""

from __future__ import annotations

import ast
import os
from collections import Counter
from pathlib import Path

# Top-level package (or module) of minivid -> its floor.
FLOORS = {
    "utils": 0,
    "kernels": 1,
    "nn": 2,
    "diffusion": 3,
    "data": 3,
    "metrics": 4,
    "autoencoders": 5,
    "unets": 5,
    "transformers": 5,
    "conditioning": 6,
    "pretrained": 6,
    "pipeline": 7,
    "__main__": 8,
}

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # minivid/


def _modules(package_dir: Path) -> dict[str, Path]:
    """Every .py file under ``package_dir`` -> its dotted module name (the folder's name is the package's)."""
    root = package_dir.name
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if any(p == "__pycache__" or p.startswith(".") for p in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((root, *parts))] = path
    return found


def _imported(tree: ast.AST, name: str, is_package: bool) -> list[tuple[str, str | None]]:
    """What every import statement in ``tree`` (module ``name``) asks for, as (module, imported name) pairs:
    ``import a.b`` gives ("a.b", None), ``from a import b`` gives ("a", "b"); relative modules are resolved."""
    package = name if is_package else name.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    continue  # beyond the top-level package: not ours
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module
            names += [(base, alias.name) for alias in node.names]
    return names


def module_graph(package_dir: str | os.PathLike = PACKAGE_DIR) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see the module docstring): the graph that the layout test
    checks for cycles and floors."""
    modules = _modules(Path(package_dir))
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for base, alias in _imported(tree, name, path.name == "__init__.py"):
            if alias is not None and alias != "*" and f"{base}.{alias}" in modules:
                targets.add(f"{base}.{alias}")  # from . import kernels: the submodule
                continue
            # the module itself, or the deepest module of the package on its path (import minivid.nn.x.y)
            while base and base not in modules:
                base = base.rpartition(".")[0]
            if base:
                targets.add(base)
        graph[name] = targets - {name}
    return graph


def top_level(module: str) -> str:
    """``minivid.nn.attention`` -> ``minivid.nn``; the root package and its own modules stay as they are."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """The module graph collapsed to top-level packages: package -> {imported package: number of module edges},
    imports inside a package left out. Drawn by docs/import_graph.py."""
    packages: dict[str, Counter] = {top_level(m): Counter() for m in graph}
    for source, targets in graph.items():
        for target in targets:
            if top_level(target) != top_level(source):
                packages[top_level(source)][top_level(target)] += 1
    return {p: dict(c) for p, c in packages.items()}


def package_lines(package_dir: str | os.PathLike = PACKAGE_DIR) -> dict[str, int]:
    """Lines of source per top-level package (the size of each box in docs/import_graph.png)."""
    lines: Counter = Counter()
    for name, path in _modules(Path(package_dir)).items():
        lines[top_level(name)] += len(path.read_text(encoding="utf-8").splitlines())
    return dict(lines)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components with more than one node (Tarjan's algorithm), each
    sorted; the layout test requires none. Works on any graph of the same shape (e.g. :func:`package_graph`)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]  # iterative depth-first search
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:  # node is the root of a component: pop it
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def floor_of(module: str, floors: dict[str, int] = FLOORS) -> int | None:
    """The floor of a module's top-level package (None for the root package, or a package on no floor)."""
    parts = module.split(".")
    return floors.get(parts[1]) if len(parts) > 1 else None


def layout_violations(graph: dict[str, set[str]], floors: dict[str, int] = FLOORS) -> list[str]:
    """Every edge of the module graph that breaks the floors, as a readable message (the layout test requires
    none; the picture draws them in orange): an import of a package on the same or a higher floor, of the root
    package (import from the package that defines the name), and any top-level package that is on no floor."""
    messages = set()
    for source in graph:
        if "." in source and floor_of(source, floors) is None:
            messages.add(f"{top_level(source)} is on no floor: add it to FLOORS in minivid/utils/imports.py")
    for source, targets in graph.items():
        if "." not in source:
            continue  # the root __init__.py re-exports from the packages: exempt
        for target in targets:
            if top_level(target) == top_level(source):
                continue
            if "." not in target:
                messages.add(f"{source} imports the root package {target}: import from the package that defines "
                             "the name")
                continue
            f_source, f_target = floor_of(source, floors), floor_of(target, floors)
            if f_source is not None and f_target is not None and f_target >= f_source:
                messages.add(f"{source} imports {target}: floor {f_source} -> {f_target}")
    return sorted(messages)


__all__ = ["FLOORS", "PACKAGE_DIR", "module_graph", "package_graph", "package_lines", "cycles", "floor_of",
           "top_level", "layout_violations"]
