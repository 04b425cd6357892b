"""Fixtures for identity integration tests: a grpcio Workload API on a real Unix socket."""

from __future__ import annotations

import shutil
import tempfile
from typing import Iterator

import pytest
from support import pki
from support.grpcio_workload_server import GrpcioWorkloadServer, JwtIssuer, x509_response



@pytest.fixture(scope="session")
def ca() -> pki.Ca:
    return pki.make_ca("example.org")


@pytest.fixture(scope="session")
def fed_ca() -> pki.Ca:
    return pki.make_ca("partner.test")


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short directory: Unix socket paths are limited to 107 bytes."""
    path = tempfile.mkdtemp(prefix="wl-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(short_dir: str) -> Iterator[GrpcioWorkloadServer]:
    srv = GrpcioWorkloadServer(f"{short_dir}/api.sock")
    srv.jwt_issuer = JwtIssuer("example.org")
    srv.jwt_bundles = {"spiffe://example.org": srv.jwt_issuer.jwks()}
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def serving(server: GrpcioWorkloadServer, ca: pki.Ca, fed_ca: pki.Ca) -> GrpcioWorkloadServer:
    """The server, already holding an SVID for spiffe://example.org/web and a federated bundle."""
    server.push_x509(x509_response([(pki.make_svid(ca, "/web"), ca)], {"partner.test": [fed_ca]}))
    return server
