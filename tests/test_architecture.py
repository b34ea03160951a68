"""The package layout is the architecture (docs/architecture.md): these checks keep it so.

Each package may import only the packages below it in ``ALLOWED``; no module imports its way
back into itself (no import circles); no module grows past ``MAX_LINES``. Imports are read from
the source (every ``import`` statement, also inside functions and under ``TYPE_CHECKING``), so
a lazy import that runs back up the layers is caught too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deltamem_agents"
INTEGRATIONS = ROOT / "integrations"
MAX_LINES = 600

#: Cross-cutting modules at the package root: they import nothing of the SDK but each other,
#: and every layer may use them.
BASE = {"_version", "errors", "paths", "fileio", "progress", "concurrency", "reporting"}

_ENGINE = {"ops", "core", "model"}
_PERSISTED = _ENGINE | {"store"}
_CONVERSATION = _PERSISTED | {"session", "runtime"}
_HYBRID = _CONVERSATION | {"memory", ""}
#: package -> the packages (besides itself and BASE) it may import. "" is the package root,
#: the engine's facade (``from deltamem_agents import attach_delta_mem``).
ALLOWED: dict[str, set[str]] = {
    "ops": set(),
    "core": {"ops"},
    "model": {"ops", "core"},
    "": {"ops", "core", "model"},
    "data": {"core"},
    "store": {"core"},
    "session": _ENGINE | {"store"},
    "runtime": _ENGINE | {"store", "session"},
    "memory": _CONVERSATION,
    "eval": _HYBRID | {"data"},
    "train": _HYBRID | {"data", "eval"},
    "bench": _HYBRID | {"data", "eval"},  # bench recall scores answers with eval's metrics
    "server": _HYBRID,
    "mcp_server": _HYBRID,
    "cli": _HYBRID | {"data", "eval", "train", "bench", "server", "mcp_server"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sdk_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, module: str) -> set[str]:
    """Every deltamem_agents module named by an import statement in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "deltamem_agents" or name.startswith("deltamem_agents.")}


def _layer(module: str) -> str:
    """The package a module belongs to ("" for the package root's own __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    modules = _sdk_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        graph[module] |= {name for name in _imports(path, module) if name in modules and name != module}
    return graph


def test_every_package_is_placed_in_a_layer():
    packages = {_layer(m) for m in _sdk_modules()} - BASE - {"adapters"}
    assert packages <= set(ALLOWED), f"place these packages in ALLOWED (and docs/architecture.md): {packages - set(ALLOWED)}"


def test_no_import_runs_back_up_the_layers():
    wrong = []
    for module, targets in sorted(_graph().items()):
        layer = _layer(module)
        if layer in BASE:
            allowed = BASE
        else:
            allowed = ALLOWED[layer] | BASE | {layer}
        wrong += [f"{module} -> {t}" for t in sorted(targets) if _layer(t) not in allowed]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
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


def test_no_import_circles():
    assert not _cycles(_graph()), f"import circles: {_cycles(_graph())}"


def test_the_circle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("tree", [PACKAGE, INTEGRATIONS], ids=["deltamem_agents", "integrations"])
def test_no_module_over_the_line_limit(tree):
    long = {str(p.relative_to(ROOT)): n for p in tree.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"


def test_integrations_never_import_the_cli():
    wrong = [
        f"{p.relative_to(ROOT)} -> {name}"
        for p in INTEGRATIONS.rglob("*.py")
        for name in _imports(p, "integration")
        if _layer(name) == "cli"
    ]
    assert not wrong, wrong
