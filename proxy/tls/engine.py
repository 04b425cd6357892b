"""Engine selection, and the contract every TLS engine implements.

Two engines implement the same API:

- ``proxy._fastpath`` (Cython, compiled against OpenSSL): the default.
- ``proxy.tls.engine_py`` (pyOpenSSL): the readable reference and fallback,
  selected by ``SPIFFE_SIDECAR_NO_EXTENSIONS=1`` or when the extension is
  not built (the aiohttp/PyYAML convention).

Both work directly on a connected, non-blocking socket file descriptor: the
runtime only waits for readiness and calls one engine method per readiness
event, so no Python object is created per TLS record or per chunk in the
compiled engine. The engine never closes the fd; the runtime owns sockets.

The API (names are the contract, written as Protocols in contract.py so
that mypy holds both engines to it; see engine_py.py for the reference code):

``NAME``: "fastpath" or "python".

Step results (ints): ``DONE = 0``, ``WANT_READ = 1`` (wait for the TLS fd
to be readable), ``WANT_WRITE = 2`` (wait for the TLS fd to be writable).

``ServerContext(material: TlsMaterial)`` / ``ClientContext(material)``:
    Built once per identity snapshot and never mutated (a rotation builds a
    new pair and swaps one reference). TLS 1.3 by default, 1.2 minimum with
    AEAD ciphers only, no renegotiation, no compression. Server contexts
    require a client certificate. Peer verification is SPIFFE's, not
    WebPKI's: the leaf must carry exactly one URI SAN holding a valid
    SPIFFE ID with a non-root path, must not be a CA, must have
    digitalSignature and neither keyCertSign nor cRLSign, an EKU (if
    present) with both serverAuth and clientAuth, and must chain (RFC 5280)
    to the authorities of the trust domain it claims, and only those; every
    certificate of the chain passes the key and signature strength policy
    (proxy/spiffe/strength.py). No hostname verification.
    ``.generation`` echoes material.generation.
    ``new_connection(fd: int, resumable: bool = True) -> TlsConnection``
    (server; ``resumable=False``: nothing is resumed on it, nothing it
    makes is kept), and ``new_connection(fd: int, session_key: str | None
    = None, offer_session: bool = True)`` (client: when given, a cached TLS
    session for that key, made by this same context, is offered for
    resumption unless ``offer_session`` is False).
    Client only: ``drop_sessions(key)`` forgets every session cached under
    a key; ``cached_sessions(key) -> int``. A peer's Certificate message
    may be at most ``openssl_terms.MAX_CERT_LIST`` bytes. The reference
    engine's server keeps no sessions (its bindings cannot remove one).

``TlsConnection``:
    ``handshake() -> int``: one step; DONE, WANT_READ or WANT_WRITE. Raises
        ``proxy.errors.TlsError`` (reason: HandshakeFailure) or
        ``proxy.errors.VerificationError`` (reason: VerifyFailure) when the
        peer's SVID fails SPIFFE verification.
    After DONE: ``peer_spiffe_id: str``, ``peer_not_after: float`` (Unix
        seconds), ``version: str`` ("TLSv1.3"), ``cipher: str``,
        ``resumed: bool``.
    ``session_offered: bool``: a cached session was offered (client).
    ``forget_session()``: the peer was refused; keep no session of this
        connection (server: out of the cache now; client: none cached later).
    ``shutdown() -> int``: send close_notify (DONE or WANT_WRITE).
    ``close()``: free the TLS state (idempotent; the fd stays open).
    Re-authentication (server side, TLS 1.3 post-handshake auth; issue 11.2):
    ``request_reauth() -> int`` asks the peer for its certificate again:
    DONE, WANT_WRITE/WANT_READ (call again when ready), or
    ``CANNOT_REAUTH`` (module constant, 3: TLS 1.2, or the client offered no
    post_handshake_auth); call it only while no relay direction waits to
    write TLS. The relay's reads then take in the answer;
    ``reauth_answered() -> bool`` is True once it is complete and verified
    (``peer_spiffe_id``/``peer_not_after`` are then the new certificate's;
    the reference engine raises VerificationError here, the compiled one
    refuses a bad chain inside the exchange and the relay fails, with the
    reason in ``verify_failure``). ``reauth_pending: bool``.

``ClientIdentity()``: the newest client context of a sidecar;
    ``publish(client_context)``. ``ClientContext(material, identity)``
    offers post-handshake auth and answers every certificate request with
    the identity's newest context, so a connection made under an older
    snapshot presents the renewed SVID.

``Relay(conn: TlsConnection, plain_fd: int, buffer_size: int = 65536)``:
    Moves bytes between the TLS connection and a plaintext socket, each
    direction with one bounded buffer (backpressure: a slow reader stops
    the reads on the other side instead of growing memory).
    ``tls_to_plain() -> int`` and ``plain_to_tls() -> int``: pump one
        direction until it would block; return a ``RelayStatus`` int:
        ``WANT_TLS_READ``, ``WANT_TLS_WRITE``, ``WANT_PLAIN_READ``,
        ``WANT_PLAIN_WRITE`` (what to wait for before calling again), or
        ``EOF`` (that direction is finished: on tls_to_plain the peer sent
        close_notify or closed, and the relay has shut down the plain
        socket's write side; on plain_to_tls the app closed its write side
        and the relay has sent close_notify).
    ``bytes_tls_to_plain``, ``bytes_plain_to_tls``: counters.
    RelayStatus values (module constants, equal in both engines, checked by
    a test): ``WANT_TLS_READ = 1``, ``WANT_TLS_WRITE = 2``,
    ``WANT_PLAIN_READ = 3``, ``WANT_PLAIN_WRITE = 4``, ``EOF = 5``.
    Raises ``TlsError`` on a TLS protocol error and ``OSError`` on socket
    errors (the runtime maps them at its edge).

``RelayHub(buffer_size: int = 65536)`` (compiled engine only; optional):
    The relay thread: runs the same pumps as ``Relay`` for many connections
    in one GIL-free epoll loop (``run()``, on a thread of its own) so that
    established connections cost nothing in Python. ``add(conn, tls_fd,
    plain_fd, idle_timeout, lifetime_deadline, buffer_size)`` hands one over
    and returns an ``OffloadedRelay`` (outcome, byte counts, error);
    ``finished()`` returns those that ended (``fileno()`` becomes readable
    then); ``cancel(handle)`` takes one back at once; ``stop()`` ends
    ``run()``. ``add(..., reauth_at)`` lets the hub send the certificate
    request itself; ``noticed()`` returns still-running relays with a
    ``notice`` (NOTICE_REAUTHENTICATED, NOTICE_CANNOT_REAUTH);
    ``rearm(handle, lifetime_deadline, reauth_at)`` sets new timers. proxy/runtime/offload.py is its only user; engines without it
    relay on the event loop with ``Relay``.

For the HTTP layer (issue 13), module functions over a ``TlsConnection``:
``offer_alpn(conn, protocols)`` before the first handshake step (a client
offers the list; a server accepts it in that preference; supported lists:
("h2", "http/1.1"), ("http/1.1",), ("h2",); a server connection that did
not call it negotiates no ALPN, so TCP listeners are unchanged),
``selected_alpn(conn) -> str`` ("" when none) and ``peer_leaf_der(conn) ->
bytes`` (the verified peer's leaf, for the XFCC Hash).

``classify_tls_error(detail: str) -> HandshakeFailure``: maps an OpenSSL
error string to the failure reason used in logs and metrics.

Twins of the SPIFFE core, each with a parity test over the same cases:

- ``parse_spiffe_id(s: str) -> tuple[str, str]``: (trust domain name, path);
  raises ``InvalidSpiffeIdError`` (twin of ``proxy.spiffe.id.SpiffeId.parse``).
- ``spiffe_id_from_der(der: bytes) -> str``: the one URI SAN of a DER
  certificate, strictly parsed; raises ``VerificationError`` with
  NO_URI_SAN / MULTIPLE_URI_SANS / INVALID_SPIFFE_ID / BAD_CERTIFICATE.
- ``verify_x509_svid_chain(chain_der: Sequence[bytes], bundles:
  Mapping[str, Sequence[bytes]], now: float | None = None) -> str``: the
  SPIFFE peer verification used in the handshake, exposed for tests;
  returns the peer's SPIFFE ID or raises ``VerificationError`` whose
  ``reason`` (a VerifyFailure) is the same in both engines. Checks run in
  this order, so both engines report the same first failure: parse the
  leaf (BAD_CERTIFICATE), exactly one URI SAN (NO_URI_SAN,
  MULTIPLE_URI_SANS), strict SPIFFE ID parse (INVALID_SPIFFE_ID), non-root
  path (ROOT_PATH), leaf not CA (LEAF_IS_CA), key usage: digitalSignature
  set, keyCertSign/cRLSign clear (BAD_KEY_USAGE), EKU if present has
  serverAuth and clientAuth (BAD_EXTENDED_KEY_USAGE), a bundle exists for
  the claimed trust domain (UNKNOWN_TRUST_DOMAIN), every certificate sent
  parses (BAD_CERTIFICATE), key and signature strength of each certificate
  sent, leaf first, then of the bundle's authorities' keys (WEAK_KEY /
  WEAK_SIGNATURE; policy in proxy/spiffe/strength.py), RFC 5280 path
  validation against only that bundle, intermediates from chain_der[1:]
  (EXPIRED / NOT_YET_VALID for the leaf's validity, else UNTRUSTED_CHAIN).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from proxy.tls.contract import DONE, WANT_READ, WANT_WRITE

if TYPE_CHECKING:
    from proxy.tls.contract import Engine, HubEngine

__all__ = ["DONE", "WANT_READ", "WANT_WRITE", "extensions_disabled", "load_engine"]


def extensions_disabled() -> bool:
    """True when SPIFFE_SIDECAR_NO_EXTENSIONS asks for the pure-Python engine."""
    return os.environ.get("SPIFFE_SIDECAR_NO_EXTENSIONS", "") not in ("", "0")


def load_engine() -> Engine:
    """Return the engine module this process uses (compiled unless disabled or absent).

    Both returns are type-checked against the contract (the compiled one,
    through its .pyi, also against the relay thread's part of it).
    """
    if not extensions_disabled():
        try:
            from proxy import _fastpath

            compiled: HubEngine = _fastpath
            return compiled
        except ImportError:
            if os.environ.get("SPIFFE_SIDECAR_REQUIRE_EXTENSIONS"):
                raise
    from proxy.tls import engine_py

    reference: Engine = engine_py
    return reference
