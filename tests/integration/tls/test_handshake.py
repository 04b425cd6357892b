"""Handshakes between real engines over real sockets: who gets in, who is refused, and why.

Each refusal uses a certificate that breaks exactly one SPIFFE rule
(tests/support/pki.py) and asserts the VerifyFailure the contract assigns to
it, on both engines (the ``engine`` fixture).
"""

from __future__ import annotations

import datetime as dt
import os
import select
import struct
import time
from typing import Any, Callable

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL
from support import pki

from proxy.errors import HandshakeFailure, TlsError, VerificationError, VerifyFailure

HOUR = dt.timedelta(hours=1)

# Each maker breaks one rule; the PKI fixture is passed in.
BAD_LEAVES: dict[str, tuple[Callable[[Any], pki.Leaf], VerifyFailure]] = {
    "untrusted_ca": (lambda p: pki.make_svid(p.rogue, "/impostor"), VerifyFailure.UNTRUSTED_CHAIN),
    "other_trust_domain_signed_by_trusted_ca": (
        lambda p: pki.make_svid(p.root, uris=["spiffe://other.org/impostor"]), VerifyFailure.UNTRUSTED_CHAIN),
    "two_uri_sans": (lambda p: pki.make_svid(p.root, uris=["spiffe://example.org/a", "spiffe://example.org/b"]),
                     VerifyFailure.MULTIPLE_URI_SANS),
    "no_uri_san": (lambda p: pki.make_svid(p.root, None, dns_names=["peer.example.org"]), VerifyFailure.NO_URI_SAN),
    "expired": (lambda p: pki.make_svid(p.root, not_before=pki._now() - 3 * HOUR, lifetime=HOUR),
                VerifyFailure.EXPIRED),
    "ca_leaf": (lambda p: pki.make_svid(p.root, is_ca=True), VerifyFailure.LEAF_IS_CA),
    "bad_key_usage": (lambda p: pki.make_svid(p.root, key_cert_sign=True), VerifyFailure.BAD_KEY_USAGE),
    "bad_extended_key_usage": (lambda p: pki.make_svid(p.root, eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
                               VerifyFailure.BAD_EXTENDED_KEY_USAGE),
    "root_path": (lambda p: pki.make_svid(p.root, ""), VerifyFailure.ROOT_PATH),
    "invalid_spiffe_id": (lambda p: pki.make_svid(p.root, uris=["spiffe://Example.org/x"]),
                          VerifyFailure.INVALID_SPIFFE_ID),
    "unknown_trust_domain": (lambda p: pki.make_svid(pki.make_ca("elsewhere.test")),
                             VerifyFailure.UNKNOWN_TRUST_DOMAIN),
}


def _assert_no_application_data(engine: Any, harness: Any, conn: Any, sock: Any,
                                 errors: dict[str, BaseException], side: str) -> None:
    """The refused peer's side either failed or reads nothing but an end/alert."""
    if side in errors:
        assert isinstance(errors[side], (TlsError, VerificationError, OSError))
        return
    a, b = harness.pair()
    relay = engine.Relay(conn, a.fileno())
    ended = None
    deadline = time.monotonic() + 5.0
    while ended is None and time.monotonic() < deadline:
        try:
            status = relay.tls_to_plain()
        except TlsError as exc:
            ended = f"TlsError: {exc}"
            break
        if status == engine.EOF:
            ended = "EOF"
        else:
            select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
    # Falling off the deadline means the refused side was left hanging: a failure.
    assert ended is not None, "refused peer neither saw the end of the stream nor a TLS error within 5 s"
    assert ended == "EOF" or ended.startswith("TlsError"), ended
    assert relay.bytes_tls_to_plain == 0


def test_mutual_handshake_reports_peer_identity_and_tls13(engine, harness, test_pki, server_leaf, client_leaf):
    server_ctx = engine.ServerContext(test_pki.material(server_leaf, generation=7))
    client_ctx = engine.ClientContext(test_pki.material(client_leaf))
    est = harness.connect(server_ctx, client_ctx)
    assert est.server.peer_spiffe_id == "spiffe://example.org/client"
    assert est.client.peer_spiffe_id == "spiffe://example.org/server"
    assert est.server.version == est.client.version == "TLSv1.3"
    assert est.server.cipher.startswith("TLS_") and est.server.cipher == est.client.cipher
    assert not est.server.resumed and not est.client.resumed
    assert est.client.peer_not_after == pytest.approx(server_leaf.cert.not_valid_after_utc.timestamp())
    assert est.server.peer_not_after == pytest.approx(client_leaf.cert.not_valid_after_utc.timestamp())
    assert server_ctx.generation == 7
    est.server.close()
    est.server.close()  # idempotent


@pytest.mark.parametrize("case", sorted(BAD_LEAVES))
def test_server_rejects_bad_client_svid(engine, harness, test_pki, server_leaf, case):
    make, reason = BAD_LEAVES[case]
    server_ctx = engine.ServerContext(test_pki.material(server_leaf))
    client_ctx = engine.ClientContext(test_pki.material(make(test_pki)))
    s_sock, c_sock = harness.pair()
    server, client = server_ctx.new_connection(s_sock.fileno()), client_ctx.new_connection(c_sock.fileno())
    errors = harness.handshake(server, s_sock, client, c_sock)
    assert isinstance(errors.get("server"), VerificationError), errors
    assert errors["server"].reason is reason, errors["server"].detail
    _assert_no_application_data(engine, harness, client, c_sock, errors, "client")


@pytest.mark.parametrize("case", sorted(BAD_LEAVES))
def test_client_rejects_bad_server_svid(engine, harness, test_pki, client_leaf, case):
    make, reason = BAD_LEAVES[case]
    server_ctx = engine.ServerContext(test_pki.material(make(test_pki)))
    client_ctx = engine.ClientContext(test_pki.material(client_leaf))
    s_sock, c_sock = harness.pair()
    server, client = server_ctx.new_connection(s_sock.fileno()), client_ctx.new_connection(c_sock.fileno())
    errors = harness.handshake(server, s_sock, client, c_sock)
    assert isinstance(errors.get("client"), VerificationError), errors
    assert errors["client"].reason is reason, errors["client"].detail
    # Both engines abort inside the handshake, so the server never receives a byte.
    _assert_no_application_data(engine, harness, server, s_sock, errors, "server")


def test_server_rejects_client_without_certificate(engine, harness, test_pki, server_leaf, raw_peer):
    server_ctx = engine.ServerContext(test_pki.material(server_leaf))
    s_sock, c_sock = harness.pair()
    server, client = server_ctx.new_connection(s_sock.fileno()), raw_peer(c_sock, server=False)
    errors = harness.handshake(server, s_sock, client, c_sock)
    assert isinstance(errors.get("server"), TlsError), errors
    assert errors["server"].reason is HandshakeFailure.NO_CLIENT_CERT


def test_server_rejects_chain_missing_its_intermediate(engine, harness, test_pki, server_leaf):
    leaf = pki.make_svid(test_pki.intermediate, "/lonely")
    leaf.chain = leaf.chain[:1]
    server_ctx = engine.ServerContext(test_pki.material(server_leaf))
    client_ctx = engine.ClientContext(test_pki.material(leaf))
    s_sock, c_sock = harness.pair()
    server, client = server_ctx.new_connection(s_sock.fileno()), client_ctx.new_connection(c_sock.fileno())
    errors = harness.handshake(server, s_sock, client, c_sock)
    assert errors["server"].reason is VerifyFailure.UNTRUSTED_CHAIN


def test_peer_capped_at_tls12_still_connects_with_an_aead_cipher(engine, harness, test_pki, server_leaf,
                                                               client_leaf, raw_peer):
    server_ctx = engine.ServerContext(test_pki.material(server_leaf))
    s_sock, c_sock = harness.pair()
    server = server_ctx.new_connection(s_sock.fileno())
    client = raw_peer(c_sock, server=False, leaf=client_leaf, max_version=SSL.TLS1_2_VERSION)
    assert harness.handshake(server, s_sock, client, c_sock) == {}
    assert server.version == client.version == "TLSv1.2"
    assert "GCM" in server.cipher or "CHACHA20" in server.cipher
    assert server.peer_spiffe_id == "spiffe://example.org/client"


def test_client_accepts_server_capped_at_tls12(engine, harness, test_pki, server_leaf, client_leaf, raw_peer):
    client_ctx = engine.ClientContext(test_pki.material(client_leaf))
    s_sock, c_sock = harness.pair()
    server = raw_peer(s_sock, server=True, leaf=server_leaf, max_version=SSL.TLS1_2_VERSION)
    client = client_ctx.new_connection(c_sock.fileno())
    assert harness.handshake(server, s_sock, client, c_sock) == {}
    assert client.version == "TLSv1.2"
    assert client.peer_spiffe_id == "spiffe://example.org/server"


def _tls11_client_hello() -> bytes:
    # Hand-built so the test does not depend on a client library still able to speak TLS 1.1.
    body = b"\x03\x02" + os.urandom(32) + b"\x00" + b"\x00\x06\xc0\x14\xc0\x0a\x00\x2f" + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake


@pytest.mark.parametrize("data, reasons", [
    (_tls11_client_hello(), {HandshakeFailure.PROTOCOL}),
    (b"GET / HTTP/1.1\r\nHost: sidecar\r\n\r\n", {HandshakeFailure.NOT_TLS}),
    (b"SSH-2.0-OpenSSH_9.6\r\n", {HandshakeFailure.NOT_TLS}),
    (b"\x00" * 64, {HandshakeFailure.NOT_TLS, HandshakeFailure.PROTOCOL}),
], ids=["tls1.1", "http", "ssh", "zeros"])
def test_server_refuses_old_tls_and_garbage_at_once(engine, harness, test_pki, server_leaf, data, reasons):
    server_ctx = engine.ServerContext(test_pki.material(server_leaf))
    s_sock, c_sock = harness.pair()
    c_sock.sendall(data)
    server = server_ctx.new_connection(s_sock.fileno())
    with pytest.raises(TlsError) as info:
        server.handshake()
    assert info.value.reason in reasons, info.value.detail


def test_handshake_reports_peer_that_hangs_up(engine, harness, test_pki, server_leaf):
    server_ctx = engine.ServerContext(test_pki.material(server_leaf))
    s_sock, c_sock = harness.pair()
    server = server_ctx.new_connection(s_sock.fileno())
    assert server.handshake() == engine.WANT_READ
    c_sock.close()
    with pytest.raises(TlsError) as info:
        server.handshake()
    assert info.value.reason is HandshakeFailure.PEER_CLOSED


def test_context_refuses_key_that_does_not_match_its_certificate(engine, test_pki, server_leaf, client_leaf):
    material = test_pki.material(server_leaf)
    mismatched = type(material)(spiffe_id=material.spiffe_id, chain_der=material.chain_der,
                                key_der=client_leaf.key_der, bundles=material.bundles)
    # The compiled engine wraps it in TlsError; the reference engine lets pyOpenSSL's error through.
    with pytest.raises((TlsError, SSL.Error), match="mismatch"):
        engine.ServerContext(mismatched)
