"""Architecture guards: the sans-IO core stays free of I/O and clocks (DESIGN.md §3).

The core (SPIFFE values, policy, connection machine, config, the identity
store/swap/rotation) takes time as `now` and bytes as arguments; only the
runtime drivers, the Workload API client/agent, the admin endpoint and the
CLI do I/O. The guard reads each core module's syntax tree, so it sees what
a text search would miss:

- an I/O module imported any way: ``import socket as s``, ``from socket import
  socket``, inside a function, or through ``importlib`` / ``__import__``;
- the project's own I/O modules (``proxy.runtime``, ``proxy.interception``,
  ``proxy.agent``, ``proxy.identity.client`` ...), which would bring the I/O in
  one step removed;
- a clock read under any name: ``time.time()``, ``from time import time``,
  ``import time as t; t.monotonic``, a reference handed on without a call
  (``clock = time.time``), ``datetime.now()``, and pyOpenSSL's
  ``has_expired()``, which reads the wall clock inside.

Imports under ``if TYPE_CHECKING:`` never run and are not counted.

The fd-based TLS engines are the one measured exception: they make the
syscalls on the fds the runtime hands them and OpenSSL checks certificate
validity against the wall clock during the handshake (both faster than a
bytes-in/bytes-out engine, see README). That exception is named per module
below, and for the compiled engine per function, so a new clock read or
socket call anywhere else fails here.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

import proxy

ROOT = pathlib.Path(proxy.__file__).parent

CORE = ["spiffe", "policy", "connection", "tls", "config", "yamlfields.py", "errors.py",
        "identity/store.py", "identity/swap.py", "identity/rotation.py", "identity/snapshot.py",
        "http/detect.py", "http/normalize.py", "http/xfcc.py"]

FORBIDDEN_MODULES = {"socket", "trio", "asyncio", "uvloop", "grpc", "selectors", "select", "threading", "subprocess",
                     "ssl", "signal", "multiprocessing", "concurrent", "http", "urllib", "importlib"}
#: The project's modules that do I/O: importing one brings its I/O into the core.
IO_MODULES = ("proxy.runtime", "proxy.interception", "proxy.agent", "proxy.identity.client",
              "proxy.identity.source", "proxy.identity.files", "proxy.workload_api.grpc_client", "proxy.operations.admin",
              "proxy.operations.reload", "proxy.sidecar", "proxy.cli", "proxy.commands", "proxy.demo", "proxy.operations.accesslog")
#: Clock readers: module -> its functions that read (or wait on) a clock.
CLOCKS = {
    "time": {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "process_time",
             "process_time_ns", "thread_time", "clock_gettime", "clock_gettime_ns", "sleep"},
    "datetime": {"now", "utcnow", "today"},  # datetime.datetime.now, datetime.date.today, ...
}
#: Method names that read the wall clock whatever the object (pyOpenSSL's X509.has_expired).
CLOCK_METHODS = {"has_expired"}

#: Modules of the core allowed a named exception, each with the reason.
ALLOWED = {
    # The reference TLS engine performs the syscalls on the fds it is handed,
    # like the compiled engine does in C; waiting for readiness stays in the runtime.
    "tls/engine_py.py": {"socket"},
    # It reads the wall clock once per handshake to check the peer's validity,
    # as OpenSSL does inside the compiled engine (time(NULL), below).
    "tls/engine_py_tls.py": {"clock"},
    # Its verify_x509_svid_chain twin defaults `now` to the wall clock, as the compiled one does.
    "tls/engine_py_spiffe.py": {"clock"},
    # The identity store is published to from the Workload API thread on the
    # uvloop runtime; a lock makes the one-reference swap safe.
    "identity/store.py": {"threading"},
}

#: The compiled engine's clock reads, by function (names survive moving code between .pxi files).
COMPILED_CLOCK_READS = {
    "_monotonic": "the relay thread's idle and lifetime timers (CLOCK_MONOTONIC, no GIL)",
    "_to_monotonic": "a Unix deadline (lifetime, re-authentication) converted to the relay thread's monotonic"
                     " clock, for add() and rearm()",
    "verify_x509_svid_chain": "the twin's now=None default (engine_py_tls does the same)",
    "verify_resumed": "a resumed peer's certificate validity at the handshake",
    "verify_in_handshake": "the peer's chain validity at the handshake (OpenSSL's verify callback)",
}
_C_CLOCK = re.compile(r"\btime\(NULL\)|\bclock_gettime\(|\bgettimeofday\(|\bclock\(\)")
_C_DEF = re.compile(r"^\s*(?:cdef|cpdef|def)\s+[^=(#]*?(\w+)\s*\(")


def _core_files() -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for entry in CORE:
        path = ROOT / entry
        assert path.exists(), f"{entry} is named as core but does not exist (moved? update CORE)"
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[:-node.level]
    return ".".join(base + ([node.module] if node.module else []))


class _Scan(ast.NodeVisitor):
    """Collects a module's I/O imports and clock reads, following aliases."""

    def __init__(self, module: str, allowed: set[str]) -> None:
        self.module, self.allowed = module, allowed
        self.found: list[str] = []
        self.module_alias: dict[str, str] = {}  # local name -> stdlib module it names (time, datetime)
        self.clock_names: set[str] = set()  # local names bound to a clock function

    def _say(self, node: ast.AST, what: str, kind: str) -> None:
        if kind not in self.allowed:
            self.found.append(f"{self.module}:{getattr(node, 'lineno', 0)} {what}")

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _imported(self, node: ast.AST, name: str) -> None:
        top = name.split(".")[0]
        if top in FORBIDDEN_MODULES:
            self._say(node, f"imports {name}", top)
        if any(name == m or name.startswith(m + ".") for m in IO_MODULES):
            self._say(node, f"imports the I/O module {name}", name)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._imported(node, alias.name)
            top = alias.name.split(".")[0]
            if top in CLOCKS:
                self.module_alias[alias.asname or top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = _absolute(node, self.module)
        for alias in node.names:
            self._imported(node, f"{source}.{alias.name}" if source.startswith("proxy") else source)
            local = alias.asname or alias.name
            if source in CLOCKS and alias.name in CLOCKS[source]:
                self.clock_names.add(local)
                self._say(node, f"imports the clock {source}.{alias.name}", "clock")
            elif source == "datetime" and alias.name in ("datetime", "date"):
                self.module_alias[local] = "datetime"

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = node.value
        named = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        module = self.module_alias.get(named or "") or ("datetime" if named in ("datetime", "date") else None)
        if module is not None and node.attr in CLOCKS.get(module, set()):
            self._say(node, f"reads the clock ({named}.{node.attr})", "clock")
        if node.attr in CLOCK_METHODS:
            self._say(node, f"reads the clock (.{node.attr}: the wall clock inside)", "clock")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.clock_names:
            self._say(node, f"reads the clock ({node.id})", "clock")
        elif node.id == "__import__":
            self._say(node, "imports dynamically (__import__)", "importlib")


def violations(source: str, module: str, allowed: set[str] | None = None) -> list[str]:
    """What in ``source`` (the text of ``module``) breaks the sans-IO rule, one line each."""
    scan = _Scan(module, allowed or set())
    scan.visit(ast.parse(source))
    return scan.found


def _module_of(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_core_modules_exist() -> None:
    assert len(_core_files()) >= 10, "the sans-IO core should be scanned, not an empty set"


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_sans_io_core_does_no_io_and_reads_no_clock(path: pathlib.Path) -> None:
    allowed = ALLOWED.get(path.relative_to(ROOT).as_posix(), set())
    assert violations(path.read_text(), _module_of(path), allowed) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("import time\ntime.time()", "reads the clock (time.time)"),
    ("from time import time\n", "imports the clock time.time"),
    ("from time import monotonic as m\nx = m", "reads the clock (m)"),
    ("import time as t\nclock = t.monotonic\n", "reads the clock (t.monotonic)"),
    ("import datetime\ndatetime.datetime.now()", "reads the clock (datetime.now)"),
    ("from datetime import datetime as dt\ndt.utcnow()", "reads the clock (dt.utcnow)"),
    ("def f(cert):\n    return cert.has_expired()", "reads the clock (.has_expired"),
    ("import socket as s\n", "imports socket"),
    ("def f():\n    from socket import socketpair\n", "imports socket"),
    ("import importlib\nimportlib.import_module('socket')", "imports importlib"),
    ("__import__('socket')", "imports dynamically (__import__)"),
    ("from proxy.runtime.sockets import peek\n", "imports the I/O module proxy.runtime.sockets"),
    ("from proxy import interception\n", "imports the I/O module proxy.interception"),
    ("from ..identity import client\n", "imports the I/O module proxy.identity.client"),
    ("from proxy.agent.ca import Authority\n", "imports the I/O module proxy.agent.ca"),
])
def test_the_guard_sees_io_and_clocks_under_any_name(source: str, expected: str) -> None:
    found = violations(source, "proxy.connection.example")
    assert any(expected in line for line in found), found


def test_the_guard_leaves_type_checking_imports_and_passed_in_time_alone() -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from proxy.runtime.base import Io\n"
              "def f(now: float) -> float:\n    return now + 1\n")
    assert violations(source, "proxy.connection.example") == []


def test_the_compiled_engine_reads_the_clock_only_where_documented() -> None:
    found: dict[str, list[str]] = {}
    for path in sorted([*ROOT.glob("*.pyx"), *ROOT.glob("*.pxi")]):
        function = "<module>"
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if (m := _C_DEF.match(code)) is not None:
                function = m.group(1)
            if _C_CLOCK.search(code):
                found.setdefault(function, []).append(f"{path.name}:{number}")
    undocumented = {f: where for f, where in found.items() if f not in COMPILED_CLOCK_READS}
    assert undocumented == {}, "clock reads in the compiled engine outside the documented functions"
    assert set(found) == set(COMPILED_CLOCK_READS), "a documented clock read is gone: update the list"
