"""Architecture guards: the sans-IO core stays free of I/O and clocks (DESIGN.md §3).

The core (SPIFFE values, policy, connection machine, config, the identity
store/swap/rotation) takes time as `now` and bytes as arguments; only the
runtime drivers, the Workload API client/agent, the admin endpoint and the
CLI do I/O. A scan of imports and clock calls keeps it that way.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import proxy

ROOT = pathlib.Path(proxy.__file__).parent

CORE = ["spiffe", "policy", "connection", "tls", "config",
        "identity/store.py", "identity/swap.py", "identity/rotation.py", "identity/snapshot.py"]

FORBIDDEN_MODULES = {"socket", "trio", "asyncio", "uvloop", "grpc", "selectors", "select", "threading", "subprocess"}
CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("datetime", "now"),
               ("datetime", "utcnow"), ("date", "today"), ("time", "sleep")}

#: Modules of the core allowed one named exception, each with the reason.
ALLOWED = {
    # The reference TLS engine performs the syscalls on the fds it is handed,
    # like the compiled engine does in C; waiting for readiness stays in the runtime.
    "tls/engine_py.py": {"socket", "select"},
    # The engine twin defaults `now` to the wall clock when a caller passes None,
    # as OpenSSL does inside the compiled twin.
    "spiffe/verify.py": {"clock"},
    # The identity store is published to from the Workload API thread on the
    # uvloop runtime; a lock makes the one-reference swap safe.
    "identity/store.py": {"threading"},
}


def _core_files() -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for entry in CORE:
        path = ROOT / entry
        if path.is_dir():
            files += sorted(path.rglob("*.py"))
        elif path.exists():
            files.append(path)
    return files


def _violations(path: pathlib.Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    allowed = ALLOWED.get(rel, set())
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module.split(".")[0]]
        for name in names:
            if name in FORBIDDEN_MODULES and name not in allowed:
                found.append(f"{rel}:{node.lineno} imports {name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
            if (base_name, node.func.attr) in CLOCK_CALLS and "clock" not in allowed:
                found.append(f"{rel}:{node.lineno} reads the clock ({base_name}.{node.func.attr})")
    return found


def test_core_modules_exist() -> None:
    assert len(_core_files()) >= 10, "the sans-IO core should be scanned, not an empty set"


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_sans_io_core_does_no_io_and_reads_no_clock(path: pathlib.Path) -> None:
    assert _violations(path) == []
