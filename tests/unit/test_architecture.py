"""The layering rules of the code base, checked on its source: no import cycles (lazy and
``TYPE_CHECKING`` imports included: an import placed inside a function to dodge a cycle is still one) and
no module importing another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "run_src", "prompts", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


SOURCES = _sources()


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, names imported from it, line)`` for every import statement, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [alias.name for alias in node.names]
            found.append((base, names, node.lineno))
    return found


def _internal_target(name: str) -> str | None:
    """The project module an import refers to (the longest known prefix), or None for libraries."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in SOURCES:
            return candidate
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in SOURCES}
    for module, path in SOURCES.items():
        for imported, names, _ in _imports(module, path):
            targets = [f"{imported}.{n}" for n in names if f"{imported}.{n}" in SOURCES] or [imported]
            for target in targets:
                resolved = _internal_target(target)
                # a package's own submodules importing the package __init__ (implicitly, as Python does) is no edge
                if resolved and resolved != module and not module.startswith(resolved + "."):
                    graph[module].add(resolved)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_source_tree_is_found() -> None:
    assert {"models.stage", "models.retrieval.encoders", "run_src.run_parallel_workers", "prompts"} <= set(SOURCES)


def test_no_import_cycles_even_through_lazy_imports() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_detector_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("root", ["models", "run_src", "benchmarks", "tests"])
def test_no_module_imports_another_modules_private_names(root: str) -> None:
    offenders = []
    for path in sorted((REPO_ROOT / root).rglob("*.py")):
        module = _module_name(path)
        for imported, names, line in _imports(module, path):
            target = _internal_target(imported)
            if target is None or target == module:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {private} from {imported}")
    assert offenders == []
