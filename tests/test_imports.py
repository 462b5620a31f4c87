"""No import cycles: the import graph of our modules has none, and each module imports alone.

The graph is read statically and counts imports inside functions too (that is how a cycle hides);
only `if TYPE_CHECKING:` blocks, which never run, are left out. Importing each module alone in a
fresh interpreter state catches what the static reading cannot (an import made by a name built
at run time, a module that only works once another one has run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

from tests.sources import PACKAGES, ROOT, modules


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """Every dotted name an import statement in `tree` may load (`from a import b`: a and a.b)."""
    names: set[str] = set()
    for node in _walk_running_code(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _walk_running_code(tree: ast.AST):
    """ast.walk, skipping the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def all_imports() -> dict[str, set[str]]:
    """Module of ours -> every dotted name it may import, ours or not."""
    found = {}
    for name, path in modules().items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found[name] = _imported_names(ast.parse(path.read_text()), package)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (anywhere in its code)."""
    imports = all_imports()
    return {name: {m for m in names if m in imports and m != name} for name, names in imports.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_check_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    tree = ast.parse(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from exporter import never_run
        def late():
            from exporter.config import ConfigError
            from . import sibling
    """))
    names = _imported_names(tree, "exporter")
    assert {"exporter.config", "exporter.sibling"} <= names
    assert "exporter.never_run" not in names


def test_no_import_cycles():
    assert cycles(import_graph()) == []


# Run in a fresh interpreter: third-party libraries are imported once, then each of our modules
# is imported in a forked child that holds none of ours yet.
_IMPORT_EACH_ALONE = """
import importlib, os, sys, traceback
ours, outside = sys.argv[1].split(), sys.argv[2].split()
for name in outside:
    try:
        importlib.import_module(name)
    except Exception:  # optional (uvloop) or not a module (`from a import function`)
        pass
assert not [m for m in sys.modules if m.split(".")[0] in {n.split(".")[0] for n in ours}]
failed = []
for name in ours:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("failed:", *failed)
sys.exit(1 if failed else 0)
"""


def test_each_module_imports_alone():
    imports = all_imports()
    outside = {n for names in imports.values() for n in names if n.split(".")[0] not in PACKAGES}
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_ALONE, " ".join(sorted(imports)), " ".join(sorted(outside))],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "failed:"
