"""Fixtures for the SPIFFE core: both twins behind one shape, and a shared test PKI.

The ``impl`` fixture runs a rule test against the pure-Python core and the
compiled engine's twin (``proxy._fastpath``, contract in proxy/tls/engine.py).
Until the compiled twin exists its params fail with AttributeError: that is
the point of a parity test, so they are never skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from support import pki
from support.combos import engine_params, fastpath

from proxy.spiffe.id import SpiffeId
from proxy.spiffe.svid import spiffe_id_from_der
from proxy.spiffe.verify import verify_x509_svid_chain


@dataclass(frozen=True)
class Twin:
    """One implementation of the twin functions, in the compiled engine's shape."""

    name: str
    parse_spiffe_id: Callable[[str], tuple[str, str]]
    spiffe_id_from_der: Callable[[bytes], str]
    verify_x509_svid_chain: Callable[[Sequence[bytes], Mapping[str, Sequence[bytes]], float | None], str]


def _python_parse(value: str) -> tuple[str, str]:
    sid = SpiffeId.parse(value)
    return sid.trust_domain.name, sid.path


PYTHON = Twin("python", _python_parse, lambda der: str(spiffe_id_from_der(der)), verify_x509_svid_chain)


def _fastpath() -> Twin:
    _fastpath = fastpath()  # a visible skip when the extension is not built

    # Looked up at call time so a missing twin fails the test that needs it
    # (AttributeError), not the collection of every test.
    def attr(name: str) -> Any:
        return lambda *args: getattr(_fastpath, name)(*args)

    return Twin("fastpath", attr("parse_spiffe_id"), attr("spiffe_id_from_der"), attr("verify_x509_svid_chain"))


@pytest.fixture(params=engine_params())
def impl(request: pytest.FixtureRequest) -> Twin:
    """The implementation under test: the Python core or the compiled twin."""
    return PYTHON if request.param == "python" else _fastpath()


@pytest.fixture(scope="module")
def foo_root() -> pki.Ca:
    return pki.make_ca("foo.test")


@pytest.fixture(scope="module")
def foo_intermediate(foo_root: pki.Ca) -> pki.Ca:
    return pki.make_ca("foo.test", parent=foo_root)


@pytest.fixture(scope="module")
def bar_root() -> pki.Ca:
    return pki.make_ca("bar.test")


@pytest.fixture(scope="module")
def bundles(foo_root: pki.Ca, bar_root: pki.Ca) -> dict[str, list[bytes]]:
    """Both trust domains loaded, as a federated sidecar would have them."""
    return {"foo.test": [foo_root.der], "bar.test": [bar_root.der]}
