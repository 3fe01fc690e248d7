"""The shape of the code, checked on its source: imports point one way, and doors only call flows.

- Layers (docs/architecture.md): core <- tts, devices <- playlists <- scheduler <- reports <- api;
  `devices` never imports `scheduler`; `tts` and `playlists` know nothing of MQTT; nothing imports
  `api`; the speaker agent and the shared wire package never import the server.
- Doors (api/routes, api/web, api/cli.py, api/deps.py) never commit, open a transaction, plan
  jobs or publish themselves: each write action calls one use case (a `flows` function).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ["core", "tts", "devices", "playlists", "scheduler", "reports", "api"]
# What each package may import (besides itself and third-party libraries).
ALLOWED = {
    "core": set(),
    "tts": {"core"},
    "devices": {"core"},
    "playlists": {"core", "tts"},
    "scheduler": {"core", "tts", "devices", "playlists"},
    "reports": {"core", "tts", "devices", "playlists", "scheduler"},
    "api": {"core", "tts", "devices", "playlists", "scheduler", "reports"},
    "cunxiang_shared": set(),
    "cunxiang_agent": {"cunxiang_shared"},
}
# The server may use the shared wire package everywhere it speaks to speakers, and runs the agent
# (`cunxiang agent`, `cunxiang simulate`) from devices/ and api/.
for _package in ("devices", "scheduler", "reports", "api", "core"):
    ALLOWED[_package] = ALLOWED[_package] | {"cunxiang_shared"}
for _package in ("devices", "api"):
    ALLOWED[_package] = ALLOWED[_package] | {"cunxiang_agent"}
OURS = set(SERVER) | {"cunxiang_shared", "cunxiang_agent"}
# The two distributions a speaker box installs, with where their sources live.
SPEAKER_SIDE = {"cunxiang_shared": "shared/cunxiang_shared", "cunxiang_agent": "agent/cunxiang_agent"}
DOORS = ["api/routes", "api/web", "api/cli.py", "api/deps.py"]
# Calls a door must leave to a flow: committing, opening a transaction, planning, publishing.
FORBIDDEN_IN_DOORS = {"commit", "session_scope", "transaction", "schedule", "unschedule", "publish", "send",
                      "publish_command", "send_stops"}  # fmt: skip


def python_files(*parts: str) -> Iterator[Path]:
    for part in parts:
        path = ROOT / part
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in sorted(path.rglob("*.py")) if "migrations" not in p.parts)


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, anywhere in it (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", SERVER + list(SPEAKER_SIDE))
def test_imports_point_down_only(package: str) -> None:
    wrong = {}
    for path in python_files(SPEAKER_SIDE.get(package, package)):
        bad = (imported_packages(path) & OURS) - ALLOWED[package] - {package}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert wrong == {}, f"{package} may import only {sorted(ALLOWED[package])}"


def test_speech_and_playlists_know_nothing_of_mqtt() -> None:
    for path in python_files("tts", "playlists"):
        assert not imported_packages(path) & {"paho", "aiomqtt", "amqtt"}, path


def _calls(tree: ast.AST) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            yield name, node.lineno


def test_doors_never_commit_schedule_or_publish_themselves() -> None:
    found = []
    for path in python_files(*DOORS):
        for name, line in _calls(ast.parse(path.read_text(), str(path))):
            if name in FORBIDDEN_IN_DOORS:
                found.append(f"{path.relative_to(ROOT)}:{line} {name}()")
    assert found == [], "a door does a flow's work; call a flows function instead"


def _route_handlers(path: Path) -> Iterator[tuple[str, str, ast.FunctionDef]]:
    """(method, path, function) of every route a module declares with @router.<method>(...)."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if (
                isinstance(deco, ast.Call)
                and isinstance(deco.func, ast.Attribute)
                and deco.func.attr in ("post", "put", "patch", "delete")
            ):
                route = deco.args[0].value if deco.args and isinstance(deco.args[0], ast.Constant) else ""
                yield deco.func.attr, route, node


# Writing doors that change nothing in the database: logging in and out, exporting, previews of
# what a form would do.
NOTHING_WRITTEN = {"/api/v1/auth/token", "/login", "/logout"}


def _flow_calls(func: ast.FunctionDef, helpers: dict[str, ast.FunctionDef]) -> list[str]:
    """The `*flows.*` calls of a route, following calls to the module's own helper functions once."""
    out = []
    for node in ast.walk(func):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id.endswith("flows"):
            out.append(f"{f.value.id}.{f.attr}")
        elif isinstance(f, ast.Name) and f.id in helpers and helpers[f.id] is not func:
            out += _flow_calls(helpers[f.id], {})
    return out


def test_every_writing_door_calls_exactly_one_flow() -> None:
    wrong = {}
    for path in python_files("api/routes", "api/web"):
        helpers = {
            n.name: n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)
        }
        for method, route, func in _route_handlers(path):
            if route in NOTHING_WRITTEN:
                continue
            flows = _flow_calls(func, helpers)
            if len(flows) != 1:
                wrong[f"{path.relative_to(ROOT)} {method.upper()} {route}"] = flows
    assert wrong == {}
