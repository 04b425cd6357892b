"""Fixtures of the in-process data-plane tests (the harness is support.sidecar.Plane)."""

from __future__ import annotations

from typing import Iterator

import pytest

from support import pki
from support.sidecar import COMBOS, Plane, engine_module, material


@pytest.fixture(scope="session")
def ca() -> pki.Ca:
    return pki.make_ca("example.org")


@pytest.fixture(params=COMBOS, ids=[f"{r}-{e}" for r, e in COMBOS])
def plane(request: pytest.FixtureRequest, ca: pki.Ca) -> Iterator[Plane]:
    runtime, engine_name = request.param
    engine = engine_module(engine_name)
    p = Plane(engine=engine, runtime=runtime)
    p.contexts["server"] = engine.ServerContext(material(ca, "/backend"))
    p.contexts["client"] = engine.ClientContext(material(ca, "/frontend"))
    yield p
    p.stop()
