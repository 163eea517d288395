"""The tree's layering, checked on the source: no import cycles, pure policies free of Kafka.

An AST walk over every module of ``pipeline`` and ``workers`` (imports inside functions count:
a lazy import is still a dependency). ``from package import name`` depends on ``package.name``
when that is a module, else on ``package``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "workers")
KAFKA_CLIENTS = ("confluent_kafka", "aiokafka", "faust")

#: The pure policies: plain Python with an injectable clock, no Kafka client anywhere below them.
PURE_MODULES = (
    "pipeline.windowing.policy",
    "pipeline.assembly.policy",
    "pipeline.control.policy",
    "pipeline.control.ladder",
    "pipeline.control.costs",
    "pipeline.gateway.policy",
    "pipeline.observe.latency",
    "pipeline.observe.probe",
    "workers.batching.policy",
    "workers.worker.offsets",
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported_names(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _owner(name: str) -> str | None:
    """The project module ``name`` refers to (itself or its closest enclosing module), if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = {_owner(name) for name in _imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _collapsed(depth: int) -> dict[str, set[str]]:
    """The module graph with every module replaced by its first ``depth`` name parts."""
    graph: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        source = ".".join(module.split(".")[:depth])
        graph.setdefault(source, set()).update(
            ".".join(t.split(".")[:depth]) for t in targets if ".".join(t.split(".")[:depth]) != source
        )
    return graph


def test_the_walk_sees_the_tree() -> None:
    assert {"pipeline.cli", "pipeline.windowing.policy", "workers.worker.service"} <= set(MODULES)
    assert "pipeline.kafka.clients" in GRAPH["workers.worker.service"]


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(GRAPH) == []


def test_no_import_cycle_between_stages() -> None:
    """Stages (``pipeline.windowing``, ``workers.asr`` ...) depend on each other in one direction only."""
    assert _cycles(_collapsed(2)) == []


def test_pipeline_never_imports_workers() -> None:
    assert _collapsed(1)["pipeline"] == set()


def _reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += GRAPH.get(current, ())
    return seen


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_policy_imports_no_kafka_client(module: str) -> None:
    offenders = {
        f"{dependency} imports {name}"
        for dependency in _reachable(module)
        for name in _imported_names(dependency, MODULES[dependency])
        if name.split(".")[0] in KAFKA_CLIENTS
    }
    assert offenders == set()


def test_runtime_recognizer_does_not_import_the_training_lab() -> None:
    runtime = [m for m in MODULES if m.startswith("workers.asr") and not m.startswith("workers.asr.lab")]
    offenders = {m for m in runtime if any(d.startswith("workers.asr.lab") for d in _reachable(m))}
    assert offenders == set()


def test_a_cycle_is_detected() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
