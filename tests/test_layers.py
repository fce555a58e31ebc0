"""The layout is the architecture: each package imports only the layers below it,
no module imports itself round a cycle, and the core never imports the CLI.

Imports are read from the source (``ast``), so a test fails on the line that
breaks a rule, whether or not that line has run. Imports under
``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

import vsockctl

ROOT = Path(vsockctl.__file__).parent

# Lowest first: a module may import its own layer and those before it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"units", "signals", "events"}),  # no vsockctl imports but their own
    frozenset({"errors", "vsock"}),  # the socket layer
    frozenset({"exit_status"}),
    frozenset({"transfer", "discover", "systemd"}),  # moving bytes; this machine; its manager
    frozenset({"forward", "bench", "capture", "metrics"}),  # built on those
    frozenset({"cli"}),  # the only place click and rich are used
)
FACADE = {"vsockctl", "vsockctl.__main__"}  # the library's front door and `python -m`


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> list[tuple[int, str | None, int, list[str]]]:
    """(line, module, level, names) of every import outside TYPE_CHECKING blocks."""
    found: list[tuple[int, str | None, int, list[str]]] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            found.append((node.lineno, node.module, node.level, names))
        todo.extend(ast.iter_child_nodes(node))
    return found


@cache
def imports_of(name: str) -> tuple[tuple[int, str], ...]:
    """The vsockctl modules ``name`` imports, with the line of each import."""
    path, known = modules()[name], modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for line, module, level, names in _imports(ast.parse(path.read_text())):
        if level:
            base = package.rsplit(".", level - 1)[0] if level > 1 else package
            module = f"{base}.{module}" if module else base
        if module is None or not module.startswith("vsockctl"):
            continue
        targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in known] or [module]
        out += [(line, target) for target in targets]
    return tuple(out)


def layer_of(name: str) -> int:
    top = name.split(".")[1]
    (index,) = (i for i, layer in enumerate(LAYERS) if top in layer)
    return index


def test_every_module_has_a_layer() -> None:
    for name in set(modules()) - FACADE:
        assert layer_of(name) >= 0, name


def upward(name: str, imports: tuple[tuple[int, str], ...]) -> list[str]:
    """The imports of ``name`` that reach above its layer."""
    mine = layer_of(name)
    return [
        f"line {line}: {target}"
        for line, target in imports
        if target not in FACADE and layer_of(target) > mine
    ]


@pytest.mark.parametrize("name", sorted(set(modules()) - FACADE))
def test_a_module_imports_only_its_layer_and_those_below(name: str) -> None:
    assert upward(name, imports_of(name)) == [], f"{name} imports from above its layer"


def test_the_layer_rule_finds_an_upward_import() -> None:
    assert upward("vsockctl.vsock.sockets", ((7, "vsockctl.cli.env"),)) == [
        "line 7: vsockctl.cli.env"
    ]
    assert upward("vsockctl.cli.env", ((7, "vsockctl.vsock.sockets"),)) == []


def test_no_core_module_imports_the_cli() -> None:
    bad = [
        f"{name} line {line}"
        for name in modules()
        if not name.startswith(("vsockctl.cli", "vsockctl.__main__"))
        for line, target in imports_of(name)
        if target.startswith("vsockctl.cli")
    ]
    assert bad == []


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (module: the modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_no_import_cycle() -> None:
    graph = {name: [t for _, t in imports_of(name) if t != name] for name in modules()}
    assert find_cycle(graph) is None


def test_imports_are_read_whole() -> None:
    """Absolute, relative and module imports all count (or the rules above see nothing)."""
    send = {target for _, target in imports_of("vsockctl.cli.send")}
    assert {"vsockctl.cli.env", "vsockctl.transfer.engine", "vsockctl.cli.app"} <= send
    catalog = {target for _, target in imports_of("vsockctl.events.catalog")}
    assert "vsockctl.events.forward" in catalog  # from . import forward


def readme_layout() -> str:
    readme = (ROOT.parent / "README.md").read_text()
    return readme.split("### Layout", 1)[1].split("```text", 1)[1].split("```", 1)[0]


def test_the_readme_draws_every_package_and_top_level_module() -> None:
    drawn = set(re.findall(r"^  (\S+)", readme_layout(), re.M))
    packages = {f"{p.parent.name}/" for p in ROOT.glob("*/__init__.py")}
    top = {p.name for p in ROOT.glob("*.py")} - {"__main__.py"}
    assert drawn == packages | top


@pytest.mark.parametrize("package", sorted(p.parent.name for p in ROOT.glob("*/__init__.py")))
def test_every_package_says_what_it_is_for(package: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
    assert doc is not None and len(doc) > 40, package
    for layer in LAYERS:  # and it has its place in the layering
        if package in layer:
            return
    raise AssertionError(f"{package} is in no layer")
