"""The import direction: a package imports only the packages below it and the spine.

    commands
    hooks, watch        (never each other)
    run
    plan
    docker, pachyderm   (never each other)
    repo
    spine: cli, errors, config, globs (imported by all; imports only the spine)

Every import counts, deferred ones and those under TYPE_CHECKING too: a deferred import
upward is still a floor that sits on the one above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pachhook"

LEVELS = {
    "repo": 1,
    "docker": 2,
    "pachyderm": 2,
    "plan": 3,
    "run": 4,
    "hooks": 5,
    "watch": 5,
    "commands": 6,
}
MAX_DEPTH = 8


def _room(module: str) -> str:
    """`pachhook.docker.engine` -> `docker`; a module of the spine -> `spine`."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LEVELS:
        return parts[1]
    return "spine"


def _level(room: str) -> int:
    return LEVELS.get(room, 0)


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every pachhook module `path` imports (a `from pachhook.x import y` counts `y` when it
    is a module of its own)."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pachhook"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("pachhook"):
                continue
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if _exists(candidate):
                    found.add(candidate)
    return found


def _exists(module: str) -> bool:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[_module_name(path)] = {m for m in _imports(path) if _exists(m)}
    return graph


def test_no_import_goes_up_or_sideways() -> None:
    wrong = []
    for module, imported in _graph().items():
        room = _room(module)
        for other in imported:
            target = _room(other)
            if target == room or other in ("pachhook", "pachhook.__init__"):
                continue
            if _level(target) >= _level(room):
                wrong.append(f"{module} ({room}) imports {other} ({target})")
    assert not wrong, "imports against the direction:\n" + "\n".join(sorted(wrong))


def test_package_faces_import_nothing() -> None:
    """Package `__init__` files stay docstring-only: the no-op hook path pays for nothing."""
    busy = []
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent.name == "commands" or init.parent == PACKAGE:
            continue
        body = ast.parse(init.read_text()).body
        if any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body):
            busy.append(str(init.relative_to(PACKAGE)))
    assert not busy, f"package faces with code: {busy}"


def _floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """How high each node stands: 1 + the highest node it imports. A circle is an error."""
    depth: dict[str, int] = {}
    visiting: list[str] = []

    def floors(node: str) -> int:
        if node in depth:
            return depth[node]
        if node in visiting:
            circle = visiting[visiting.index(node) :] + [node]
            raise AssertionError("import circle: " + " -> ".join(circle))
        visiting.append(node)
        below = [floors(m) for m in graph.get(node, ()) if m != node]
        visiting.pop()
        depth[node] = 1 + max(below, default=0)
        return depth[node]

    for node in graph:
        floors(node)
    return depth


def _room_name(module: str) -> str:
    """A package is one room; each module of the spine is a room of its own."""
    room = _room(module)
    return room if room != "spine" else module


def test_no_circles_and_few_floors() -> None:
    graph = _graph()
    _floors(graph)  # no circle between modules
    rooms: dict[str, set[str]] = {}
    for module, imported in graph.items():
        room = _room_name(module)
        rooms.setdefault(room, set()).update(
            _room_name(m) for m in imported if m not in ("pachhook", "pachhook.__init__")
        )
    floors = _floors(rooms)
    highest = max(floors, key=lambda room: floors[room])
    assert floors[highest] <= MAX_DEPTH, f"{highest} stands {floors[highest]} floors high"
