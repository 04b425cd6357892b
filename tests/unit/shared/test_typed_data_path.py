"""The data path between runner, engines and swap is typed: no Any, no type: ignore.

The engine contract is written as Protocols (proxy/tls/contract.py) so that
mypy holds both engines and the .pyi to it. That is only worth something
while the modules on the path use them: an ``Any`` or a ``type: ignore``
there switches the checker off exactly where the engines are called.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import proxy

ROOT = pathlib.Path(proxy.__file__).parent
DATA_PATH = ["runtime/runner.py", "runtime/base.py", "runtime/accept.py", "runtime/offload.py", "runtime/served.py",
             "runtime/primitives.py", "runtime/sockets.py", "runtime/happy_eyeballs.py",
             "identity/swap.py", "tls/contract.py", "tls/engine.py", "_fastpath.pyi"]


def _loose_spots(source: str) -> list[str]:
    found = [f"line {n}: type: ignore" for n, line in enumerate(source.splitlines(), 1) if "type: ignore" in line]
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Name) and node.id == "Any") or (
                isinstance(node, ast.Attribute) and node.attr == "Any"):
            found.append(f"line {node.lineno}: Any")
    return found


@pytest.mark.parametrize("rel", DATA_PATH)
def test_the_data_path_has_no_any_and_no_type_ignore(rel: str) -> None:
    assert _loose_spots((ROOT / rel).read_text()) == []


def test_the_check_sees_both() -> None:
    source = "from typing import Any\nx: Any = 1\ny = f()  # type: ignore[no-untyped-call]\n"
    assert _loose_spots(source) == ["line 3: type: ignore", "line 2: Any"]
