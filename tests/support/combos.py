"""The runtime x engine combinations every scenario runs on, defined once.

Every suite that runs "on both runtimes" or "on both engines" takes its
lists from here (uvloop's _testbase and aiohttp's parser parametrization do
the same), so adding a runtime or an engine is one edit. A compiled-engine
case is skipped, with the reason shown, when the build has no extension
(``SPIFFE_SIDECAR_NO_EXTENSIONS=1 pip install .``); it never fails for that.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

RUNTIMES = ("trio", "uvloop")
ENGINES = ("python", "fastpath")
COMBOS = [(r, e) for r in RUNTIMES for e in ENGINES]

NO_EXTENSION = ("the compiled engine (proxy._fastpath) is not built: pip install -e . builds it "
                "(this build was made with SPIFFE_SIDECAR_NO_EXTENSIONS=1 or without a compiler)")


def fastpath_available() -> bool:
    """True when the compiled engine is built and implements the contract."""
    try:
        from proxy import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return False
    return all(hasattr(_fastpath, n) for n in ("ServerContext", "ClientContext", "Relay"))


#: Marks a test (or a module, as ``pytestmark``) that only means something with the extension.
requires_fastpath = pytest.mark.skipif(not fastpath_available(), reason=NO_EXTENSION)


def fastpath() -> Any:
    """The compiled engine module, or a visible skip of the calling test when it is not built."""
    if not fastpath_available():
        pytest.skip(NO_EXTENSION)
    from proxy import _fastpath  # type: ignore[attr-defined]

    return _fastpath


def engine_module(name: str) -> ModuleType:
    """The engine named ``name`` ("python" or "fastpath"); skips when fastpath is not built."""
    if name == "python":
        from proxy.tls import engine_py

        return engine_py
    if name != "fastpath":
        raise ValueError(f"no engine {name!r}: one of {', '.join(ENGINES)}")
    module: ModuleType = fastpath()
    return module


def _marks(engine: str) -> list[pytest.MarkDecorator]:
    return [requires_fastpath] if engine == "fastpath" else []


def engine_params() -> list[Any]:
    """``ENGINES`` as pytest params; the fastpath one carries the skip-when-unbuilt mark."""
    return [pytest.param(e, id=e, marks=_marks(e)) for e in ENGINES]


def combo_params() -> list[Any]:
    """``COMBOS`` as pytest params with ids like "trio-fastpath", skip-marked like engine_params."""
    return [pytest.param((r, e), id=f"{r}-{e}", marks=_marks(e)) for r, e in COMBOS]
