"""Fixtures for the identity core: real certificates from the test PKI, real snapshots.

Snapshots are built through the same path the Workload API client uses
(an X509SVIDResponse -> messages.x509_context -> IdentitySnapshot), so the
conversion is exercised by every store/swap test.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

import pytest
from support import pki
from support.grpcio_workload_server import x509_response

from proxy.identity import messages
from proxy.identity.snapshot import IdentitySnapshot

SnapshotFactory = Callable[..., IdentitySnapshot]


@pytest.fixture(scope="module")
def ca() -> pki.Ca:
    return pki.make_ca("example.org")


@pytest.fixture(scope="module")
def fed_ca() -> pki.Ca:
    return pki.make_ca("partner.test")


@pytest.fixture
def make_snapshot(ca: pki.Ca, fed_ca: pki.Ca) -> SnapshotFactory:
    def make(path: str = "/web", *, lifetime: dt.timedelta = dt.timedelta(hours=1),
             not_before: dt.datetime | None = None, federated: bool = True,
             own_bundle: bool = True) -> IdentitySnapshot:
        leaf = pki.make_svid(ca, path, lifetime=lifetime, not_before=not_before)
        response = x509_response([(leaf, ca)], {"partner.test": [fed_ca]} if federated else None)
        if not own_bundle:
            response.svids[0].bundle = b""
        return IdentitySnapshot.from_context(messages.x509_context(response), source="test")

    return make
