"""The TLS engine contract as types: what the runtime, the identity swap and the relay thread may call.

``proxy/tls/engine.py`` says in prose what each call does; this module says
the same in ``typing.Protocol``s so that mypy holds both engines (the
compiled ``proxy._fastpath``, through its ``.pyi``, and the pyOpenSSL
``proxy.tls.engine_py``) to one contract: ``load_engine()`` returns either
module as an ``Engine``, so a name or signature that drifts in one of them
fails the type check, not a connection. The data path (runner, offload,
swap) is typed against these Protocols and never against either module.

The engine is a module, not a class: mypy checks a module against a
Protocol member by member, and a class attribute such as ``ServerContext``
satisfies a method of the same name because calling the class builds one.
Names keep the engine's spelling (``ServerContext``, ``WANT_TLS_READ``) for
that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from proxy.tls.material import TlsMaterial

# Handshake step results. Defined here, below both engines, so that the
# reference engine does not import the module that selects it (engine.py).
DONE = 0
WANT_READ = 1
WANT_WRITE = 2


class TlsConnection(Protocol):
    """One TLS connection over a borrowed fd: handshake steps, then the peer's verified facts."""

    @property
    def peer_spiffe_id(self) -> str: ...
    @property
    def peer_not_after(self) -> float: ...
    @property
    def version(self) -> str: ...
    @property
    def cipher(self) -> str: ...
    @property
    def resumed(self) -> bool: ...

    def handshake(self) -> int:
        """One step: DONE, WANT_READ or WANT_WRITE; raises TlsError / VerificationError."""
        ...

    def shutdown(self) -> int:
        """Send close_notify: DONE or WANT_WRITE."""
        ...

    def close(self) -> None:
        """Free the TLS state (idempotent; the fd stays open)."""
        ...

    @property
    def session_offered(self) -> bool:
        """A cached session was offered (client side)."""
        ...

    def forget_session(self) -> None:
        """The peer was refused: keep no session of this connection (server: out of the cache now)."""
        ...

    def request_reauth(self) -> int:
        """Server: ask the peer for its certificate again: DONE, WANT_*, or CANNOT_REAUTH (issue 11.2)."""
        ...

    def reauth_answered(self) -> bool:
        """True (once) when the answer was read in full and verified; the peer facts are then the new ones."""
        ...

    @property
    def reauth_pending(self) -> bool:
        """Between a request and its complete answer."""
        ...

    @property
    def verify_failure(self) -> Exception | None:
        """The last peer verification failure (the compiled engine's, from inside a re-authentication)."""
        ...


class TlsContext(Protocol):
    """What server and client contexts share: built once from one snapshot's material, never mutated."""

    @property
    def material(self) -> TlsMaterial: ...
    @property
    def generation(self) -> int: ...


class ServerContext(TlsContext, Protocol):
    """Accepts TLS from peers presenting a valid X.509-SVID (client certificate required)."""

    def new_connection(self, fd: int, resumable: bool = True) -> TlsConnection:
        """``resumable=False``: nothing is resumed on this connection and nothing it makes is kept."""
        ...


class ClientIdentity(Protocol):
    """The newest client context of a sidecar: what every client connection answers a certificate request with."""

    def publish(self, context: ClientContext) -> None: ...


class ClientContext(TlsContext, Protocol):
    """Originates TLS with our SVID; offers a cached session for ``session_key`` when it has one."""

    def new_connection(self, fd: int, session_key: str | None = None, offer_session: bool = True) -> TlsConnection:
        """``offer_session=False``: a full handshake; its sessions are still cached under ``session_key``."""
        ...

    def drop_sessions(self, session_key: str) -> None:
        """Forget every session cached under ``session_key`` (its upstream refused one)."""
        ...


class ByteCounts(Protocol):
    """Bytes moved each way: what a connection record reports and the idle watch looks at."""

    @property
    def bytes_tls_to_plain(self) -> int: ...
    @property
    def bytes_plain_to_tls(self) -> int: ...


class Relay(ByteCounts, Protocol):
    """Pumps of one established connection on the event loop; each returns a RelayStatus."""

    def tls_to_plain(self) -> int: ...
    def plain_to_tls(self) -> int: ...


class Waiter(Protocol):
    """What a runtime wakes when the relay thread hands a connection back (trio.Event / asyncio.Event)."""

    def set(self) -> None: ...


class OffloadedRelay(ByteCounts, Protocol):
    """A connection handed to a RelayHub; its outcome (RELAY_*) once the hub hands it back."""

    waiter: Waiter

    @property
    def outcome(self) -> int: ...
    @property
    def tls_to_plain_done(self) -> bool: ...
    @property
    def plain_to_tls_done(self) -> bool: ...
    @property
    def error(self) -> OSError | Exception | None: ...
    def take_notice(self) -> int:
        """The NOTICE_* the hub left while it keeps relaying (cleared)."""
        ...


class RelayHub(Protocol):
    """The relay thread's GIL-free epoll loop over many established connections."""

    def fileno(self) -> int: ...
    @property
    def active(self) -> int: ...
    def add(self, conn: TlsConnection, tls_fd: int, plain_fd: int, idle_timeout: float = 0.0,
            lifetime_deadline: float = 0.0, buffer_size: int = 0, reauth_at: float = 0.0) -> OffloadedRelay: ...
    def cancel(self, handle: OffloadedRelay) -> None: ...
    def noticed(self) -> Sequence[OffloadedRelay]: ...
    def rearm(self, handle: OffloadedRelay, lifetime_deadline: float = 0.0, reauth_at: float = 0.0) -> bool: ...
    def finished(self) -> Sequence[OffloadedRelay]: ...
    def stop(self) -> None: ...
    def run(self) -> None: ...


class RelayStatuses(Protocol):
    """The RelayStatus values (equal in both engines; PlainRelay returns the same ones)."""

    WANT_TLS_READ: int
    WANT_TLS_WRITE: int
    WANT_PLAIN_READ: int
    WANT_PLAIN_WRITE: int
    EOF: int


class Engine(RelayStatuses, Protocol):
    """A TLS engine module: ``proxy._fastpath`` or ``proxy.tls.engine_py``."""

    NAME: str
    DONE: int
    WANT_READ: int
    WANT_WRITE: int
    CANNOT_REAUTH: int

    def ServerContext(self, material: TlsMaterial) -> ServerContext: ...  # noqa: N802 (the engine's class)
    def ClientContext(self, material: TlsMaterial,  # noqa: N802
                      identity: ClientIdentity | None = None) -> ClientContext: ...
    def ClientIdentity(self) -> ClientIdentity: ...  # noqa: N802
    def Relay(self, conn: TlsConnection, plain_fd: int, buffer_size: int = 65536) -> Relay: ...  # noqa: N802
    def openssl_version(self) -> str: ...
    # The TLS facts the HTTP layer needs (issue 13): ALPN and the peer's leaf.
    def offer_alpn(self, conn: TlsConnection, protocols: Sequence[str]) -> None: ...
    def selected_alpn(self, conn: TlsConnection) -> str: ...
    def peer_leaf_der(self, conn: TlsConnection) -> bytes: ...


@runtime_checkable
class HubEngine(Engine, Protocol):
    """An engine that also has the relay thread (the compiled one); ``isinstance`` tells at start."""

    RELAY_RUNNING: int
    RELAY_FINISHED: int
    RELAY_FAILED: int
    RELAY_IDLE: int
    RELAY_LIFETIME: int
    RELAY_CANCELLED: int
    NOTICE_REAUTHENTICATED: int
    NOTICE_CANNOT_REAUTH: int

    def RelayHub(self, buffer_size: int = 65536) -> RelayHub: ...  # noqa: N802
