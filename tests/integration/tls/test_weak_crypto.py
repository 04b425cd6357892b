"""Weak keys and signatures over real sockets: refused with their named reason by both engines, both ways.

Inbound: the engine is the server and a weak client presents the chain.
Outbound: the engine is the client and a weak server presents it. The weak
side is pyOpenSSL at security level 0 (OpenSSL's default level would not
even load these certificates). Certificates come from tests/support/pki.py
and, where cryptography refuses (RSA-512, MD5/SHA-1 signatures, explicit
curve parameters), from tests/support/pki_cli.py.

Two cases cannot reach certificate verification, for protocol reasons, and
are pinned as refused at the TLS layer instead:

- RSA-512 cannot sign any TLS 1.3 signature scheme (RSA-PSS with SHA-256
  needs 528 bits), so it is tested over TLS 1.2;
- a P-192/P-224 server certificate is never sent to our client, whose
  supported groups do not include those curves; as intermediates (and as
  client leaves over TLS 1.2) they do reach verification.
"""

from __future__ import annotations

import datetime as dt
import select
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from OpenSSL import SSL
from support import pki
from support import pki_cli as cli

from proxy.errors import HandshakeFailure, TlsError, VerificationError, VerifyFailure
from proxy.tls.material import TlsMaterial

WEAK_KEY, WEAK_SIG = VerifyFailure.WEAK_KEY, VerifyFailure.WEAK_SIGNATURE
TLS12 = SSL.TLS1_2_VERSION


class WeakPeer:
    """A pyOpenSSL endpoint at security level 0 presenting `leaf`; fits Harness.handshake."""

    def __init__(self, sock: socket.socket, *, server: bool, leaf: pki.Leaf, max_version: int | None) -> None:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
        ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        if max_version is not None:
            ctx.set_max_proto_version(max_version)
        ctx.use_certificate(leaf.cert)
        for extra in leaf.chain[1:]:
            ctx.add_extra_chain_cert(extra)
        ctx.use_privatekey(leaf.key)
        # This peer is the one being judged, not the judge.
        ctx.set_verify(SSL.VERIFY_PEER if server else SSL.VERIFY_NONE, lambda *a: True)
        self.conn = SSL.Connection(ctx, sock.fileno())
        self.conn.set_accept_state() if server else self.conn.set_connect_state()

    def handshake(self) -> int:
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            return 1
        except SSL.WantWriteError:
            return 2
        return 0


class World:
    """Roots in the engine's bundle (P-256 and RSA-2048) and a cache of minted chains."""

    def __init__(self) -> None:
        self.root = pki.make_ca("example.org")
        self.rsa_root = pki.make_ca("example.org", key_kind="rsa")
        self.own = pki.make_svid(self.root, "/sidecar")
        self.bundles = {"example.org": (self.root.der, self.rsa_root.der)}
        self._leaves: dict[str, pki.Leaf] = {}

    def leaf(self, case: str, make: Callable[[World], pki.Leaf]) -> pki.Leaf:
        if case not in self._leaves:  # minted once for both engines and both directions
            self._leaves[case] = make(self)
        return self._leaves[case]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


# case: (maker, max TLS version of the weak peer, reason inbound, reason outbound)
REFUSED: dict[str, tuple[Callable[[World], pki.Leaf], int | None, Any, Any]] = {
    "leaf_rsa1024": (lambda w: cli.make_svid(w.root, key_kind="rsa1024"), None, WEAK_KEY, WEAK_KEY),
    "leaf_rsa512": (lambda w: cli.make_svid(w.root, key_kind="rsa512"), TLS12, WEAK_KEY, WEAK_KEY),
    "leaf_p192": (lambda w: cli.make_svid(w.root, key_kind="p192"), TLS12, WEAK_KEY, HandshakeFailure.PROTOCOL),
    "leaf_p224": (lambda w: cli.make_svid(w.root, key_kind="p224"), TLS12, WEAK_KEY, HandshakeFailure.PROTOCOL),
    "leaf_explicit_ec_parameters": (lambda w: cli.make_svid(w.root, key_kind="explicit_p256"), None,
                                    WEAK_KEY, WEAK_KEY),
    "leaf_signed_sha1": (lambda w: cli.make_svid(w.rsa_root, digest="sha1"), None, WEAK_SIG, WEAK_SIG),
    "leaf_signed_md5": (lambda w: cli.make_svid(w.rsa_root, digest="md5"), None, WEAK_SIG, WEAK_SIG),
    "intermediate_rsa1024": (lambda w: pki.make_svid(cli.make_ca("example.org", parent=w.root, key_kind="rsa1024")),
                             None, WEAK_KEY, WEAK_KEY),
    "intermediate_rsa512": (lambda w: pki.make_svid(cli.make_ca("example.org", parent=w.root, key_kind="rsa512")),
                            None, WEAK_KEY, WEAK_KEY),
    "intermediate_p192": (lambda w: pki.make_svid(cli.make_ca("example.org", parent=w.root, key_kind="p192")),
                          None, WEAK_KEY, WEAK_KEY),
    "intermediate_p224": (lambda w: pki.make_svid(cli.make_ca("example.org", parent=w.root, key_kind="p224")),
                          None, WEAK_KEY, WEAK_KEY),
    "intermediate_signed_sha1": (lambda w: pki.make_svid(cli.make_ca("example.org", parent=w.rsa_root,
                                                                     digest="sha1")), None, WEAK_SIG, WEAK_SIG),
    "intermediate_signed_md5": (lambda w: pki.make_svid(cli.make_ca("example.org", parent=w.rsa_root,
                                                                    digest="md5")), None, WEAK_SIG, WEAK_SIG),
}

ACCEPTED = ["rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521", "ed25519"]


def _run(engine: Any, harness: Any, world: World, leaf: pki.Leaf, inbound: bool,
         max_version: int | None) -> tuple[Any, dict[str, BaseException]]:
    """One handshake between the engine and a WeakPeer presenting leaf; (engine's connection, errors)."""
    s_sock, c_sock = harness.pair()
    if inbound:
        ours = engine.ServerContext(material_for(world)).new_connection(s_sock.fileno())
        errors = harness.handshake(ours, s_sock, WeakPeer(c_sock, server=False, leaf=leaf, max_version=max_version),
                                   c_sock)
        return ours, {"ours": errors["server"]} if "server" in errors else {}
    ours = engine.ClientContext(material_for(world)).new_connection(c_sock.fileno())
    errors = harness.handshake(WeakPeer(s_sock, server=True, leaf=leaf, max_version=max_version), s_sock, ours,
                               c_sock)
    return ours, {"ours": errors["client"]} if "client" in errors else {}


def material_for(world: World) -> TlsMaterial:
    return TlsMaterial(spiffe_id="spiffe://example.org/sidecar", chain_der=tuple(world.own.chain_der),
                       key_der=world.own.key_der, bundles=world.bundles, generation=1)


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_weak_peer_chain_is_refused_with_its_reason(engine, harness, world, case, direction) -> None:
    make, max_version, reason_in, reason_out = REFUSED[case]
    want = reason_in if direction == "inbound" else reason_out
    ours, errors = _run(engine, harness, world, world.leaf(case, make), direction == "inbound", max_version)
    failure = errors.get("ours")
    assert isinstance(failure, (VerificationError, TlsError)), f"accepted {ours.peer_spiffe_id!r}"
    assert failure.reason is want, failure
    assert ours.peer_spiffe_id == ""


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
@pytest.mark.parametrize("kind", ACCEPTED)
def test_strong_peer_key_is_accepted(engine, harness, world, kind, direction) -> None:
    leaf = world.leaf(f"leaf_{kind}", lambda w: pki.make_svid(w.root, key_kind=kind))
    ours, errors = _run(engine, harness, world, leaf, direction == "inbound", None)
    assert errors == {}
    assert ours.peer_spiffe_id == "spiffe://example.org/workload"


# --- Issue 11 item 10: a refused client hears why, during the handshake, from either engine ---


class StdlibClient:
    """Python's ssl module (the system OpenSSL) as the client under test; fits Harness.handshake."""

    def __init__(self, sock: socket.socket, leaf: pki.Leaf, directory: Path, max_version: ssl.TLSVersion) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.maximum_version = max_version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so it can present the weak certificates too
        ctx.load_cert_chain(*leaf.write_pem(directory, "client"))
        # On a duplicate: wrap_socket takes its socket over, the harness keeps waiting on sock.
        self.tls = ctx.wrap_socket(sock.dup(), do_handshake_on_connect=False)

    def handshake(self) -> int:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return 1
        except ssl.SSLWantWriteError:
            return 2
        return 0

    def first_read(self, timeout: float = 5.0) -> BaseException | bytes:
        """What the first read after the handshake yields: data, or the error (an alert, an EOF)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                return self.tls.recv(1)
            except ssl.SSLWantReadError:
                select.select([self.tls], [], [], 0.05)
            except (ssl.SSLError, OSError) as exc:
                return exc
        raise TimeoutError("no answer from the server")


ALERTS = {
    "expired": (lambda w: pki.make_svid(w.root, not_before=pki._now() - dt.timedelta(hours=3),
                                        lifetime=dt.timedelta(hours=1)),
                VerifyFailure.EXPIRED, "CERTIFICATE_EXPIRED"),
    "untrusted": (lambda w: pki.make_svid(pki.make_ca("example.org")), VerifyFailure.UNTRUSTED_CHAIN,
                  "BAD_CERTIFICATE"),
    "weak_key": (lambda w: cli.make_svid(w.root, key_kind="rsa1024"), VerifyFailure.WEAK_KEY, "BAD_CERTIFICATE"),
}


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
@pytest.mark.parametrize("case", sorted(ALERTS))
def test_refused_client_receives_the_alert_in_the_handshake(engine, harness, world, tmp_path, case,
                                                            version) -> None:
    make, reason, alert = ALERTS[case]
    leaf = world.leaf(f"alert_{case}", make)
    s_sock, c_sock = harness.pair()
    server = engine.ServerContext(material_for(world)).new_connection(s_sock.fileno())
    client = StdlibClient(c_sock, leaf, tmp_path, version)
    harness.made.append(client.tls)
    errors = harness.handshake(server, s_sock, client, c_sock)
    assert isinstance(errors.get("server"), VerificationError) and errors["server"].reason is reason, errors
    # TLS 1.2: the client's own handshake fails on the alert. TLS 1.3: the
    # client is done after its Finished, so the alert is its first read.
    heard = errors["client"] if "client" in errors else client.first_read()
    assert isinstance(heard, ssl.SSLError), f"no alert, the client read {heard!r}"
    assert alert in (heard.reason or ""), heard
