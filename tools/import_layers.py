"""The import-layer check (run by the lint environment): tracer-core's floors, and a failure
on any import circle or upward arrow, runtime or TYPE_CHECKING alike.

A module may import a module of a lower floor, or of its own room (a room is a package
prefix on a floor); the ground floor's modules may import each other. Nothing may import in
a circle. ARCHITECTURE.md describes the floors; change both together.

Usage: python tools/import_layers.py [SRC]   (SRC defaults to tracer-core/src)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# Lowest first. Each entry is a room: a module, or a package and everything under it.
FLOORS: list[list[str]] = [
    [
        "tracer.exceptions",
        "tracer.version",
        "tracer.records",
        "tracer.distributed",
        "tracer.config",
        "tracer.handles",
    ],
    ["tracer.storage", "tracer.detection", "tracer.capture", "tracer.actions"],
    ["tracer.plugins"],
    ["tracer.core"],
    ["tracer._api", "tracer.analysis"],
    ["tracer.report", "tracer.ui", "tracer.integrations", "tracer.testing"],
    ["tracer.cli"],
    ["tracer", "tracer.__main__"],
]


def modules(src: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((src / "tracer").rglob("*.py")):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The tracer modules `name` imports anywhere in its file (TYPE_CHECKING included)."""

    def resolve(target: str) -> str:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base == "tracer" or base.startswith("tracer."):
                for alias in node.names:
                    found.add(resolve(f"{base}.{alias.name}") or resolve(base))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tracer" or alias.name.startswith("tracer."):
                    found.add(resolve(alias.name))
    found.discard(name)
    found.discard("")
    return found


def room_of(name: str) -> tuple[int, str]:
    best = (-1, "")
    for floor, rooms in enumerate(FLOORS):
        for room in rooms:
            inside = name == room or (room != "tracer" and name.startswith(room + "."))
            if inside and len(room) > len(best[1]):
                best = (floor, room)
    if best[0] < 0:
        raise SystemExit(f"{name} is on no floor: add it to FLOORS in {__file__}")
    return best


def upward(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for name, targets in sorted(graph.items()):
        floor, room = room_of(name)
        for target in sorted(targets):
            target_floor, target_room = room_of(target)
            if target_room == room or target_floor < floor or target_floor == floor == 0:
                continue
            problems.append(f"{name} (floor {floor}) imports {target} (floor {target_floor})")
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
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


def main(argv: list[str]) -> int:
    src = Path(argv[1] if len(argv) > 1 else "tracer-core/src")
    known = modules(src)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    problems = upward(graph) + [
        "import circle: " + " <-> ".join(component) for component in circles(graph)
    ]
    for problem in problems:
        print(problem)  # noqa: T201 - a command-line check
    print(  # noqa: T201
        f"{len(known)} modules, {sum(map(len, graph.values()))} imports: {len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
