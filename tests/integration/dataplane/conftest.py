"""Fixtures of the in-process data-plane tests (the harness is support.sidecar.Plane)."""

from __future__ import annotations

from typing import Iterator

import pytest

from support import pki
from support.combos import COMBOS, engine_module
from support.sidecar import Plane, material


@pytest.fixture(scope="session")
def ca() -> pki.Ca:
    return pki.make_ca("example.org")


#: Every runtime x engine, plus the compiled engine relaying on the event loop instead of
#: its relay thread ("fastpath-loop": SPIFFE_SIDECAR_RELAY_THREAD=0), which must behave the same.
PLANE_COMBOS = COMBOS + [(r, "fastpath-loop") for r, e in COMBOS if e == "fastpath"]


@pytest.fixture(params=PLANE_COMBOS, ids=[f"{r}-{e}" for r, e in PLANE_COMBOS])
def plane(request: pytest.FixtureRequest, ca: pki.Ca) -> Iterator[Plane]:
    runtime, variant = request.param
    engine = engine_module(variant.removesuffix("-loop"))
    p = Plane(engine=engine, runtime=runtime, relay_on_thread=not variant.endswith("-loop"))
    p.contexts["server"] = engine.ServerContext(material(ca, "/backend"))
    p.contexts["client"] = engine.ClientContext(material(ca, "/frontend"))
    yield p
    p.stop()
