"""Connections to the next hop, kept for the next request.

``UpstreamPool`` (outbound listeners): mTLS connections to one upstream
sidecar, so an app that opens a connection per request no longer costs an
mTLS handshake per request. It is keyed by what makes a connection
acceptable: the identity generation it was made with (a rotation starts a
new pool; connections of an older generation are closed when met) and the
``expect`` patterns (a reload that changes them never reuses a connection
verified against the old ones). Bounded: at most ``pool_size`` HTTP/1.1
connections per key (more requests wait for one); when the upstream
selects ``h2`` by ALPN, one connection carries every request, multiplexed,
and a second opens only when its stream limit is reached. An idle
connection older than ``pool_idle_timeout``, past its peer certificate's
NotAfter, or one the upstream closed, is dropped when next met.

``AppConnections`` (inbound listeners): plaintext connections to the app
for one inbound connection's requests (HTTP/2 streams run concurrently,
each on its own app connection, reused when the app keeps it open).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from proxy.connection.verify import check_expected_peer
from proxy.errors import SidecarError, UpstreamError
from proxy.http.detect import ALPN_PROTOCOLS, HttpVersion, from_alpn
from proxy.http.settings import HttpSettings
from proxy.policy.match import PeerMatcher
from proxy.runtime.http.streams import PlainStream, TlsStream
from proxy.runtime.http.upstream import H1Upstream, H2Upstream
from proxy.runtime.primitives import Io
from proxy.runtime.sockets import close_quietly, open_tcp_connection
from proxy.tls.contract import DONE, WANT_READ, ClientContext, Engine, TlsConnection

Upstream = H1Upstream | H2Upstream
#: Seconds before the peer's NotAfter a pooled connection stops being used.
EXPIRY_MARGIN = 5.0


@dataclass(slots=True)
class Pooled:
    """One mTLS connection of the pool."""

    upstream: Upstream
    sock: socket.socket
    tls: TlsConnection
    generation: int
    peer_id: str
    peer_not_after: float
    idle_since: float = 0.0
    closed: bool = False

    def close(self, io: Io) -> None:
        if self.closed:
            return
        self.closed = True
        self.upstream.close()
        try:
            self.tls.shutdown()
        except (SidecarError, OSError):
            pass
        self.tls.close()
        io.notify_closing(self.sock)
        close_quietly(self.sock)

    def usable(self, now: float, idle_timeout: float) -> bool:
        """Still fit for a request: not near the peer's NotAfter, not idle too long, not closed by the peer."""
        if now > self.peer_not_after - EXPIRY_MARGIN:
            return False
        upstream = self.upstream
        if isinstance(upstream, H2Upstream):
            if upstream.dead:
                return False
            if upstream.streams:
                return True  # in use: its readers see whatever the upstream sends
        if now - self.idle_since >= idle_timeout:
            return False
        stream = upstream.stream
        received = stream.poll_idle() if isinstance(stream, TlsStream) else None
        if received is None:
            return True
        if isinstance(upstream, H2Upstream) and received:
            upstream.absorb(received)  # a SETTINGS, PING or GOAWAY sent while idle
            return not upstream.dead
        return False  # closed, or HTTP/1.1 bytes nobody asked for


def _peer_closed(sock: socket.socket) -> bool:
    """True when an idle connection has anything to read: a close, or bytes nobody asked for."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) is not None
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


@dataclass(slots=True)
class _Slot:
    idle: list[Pooled] = field(default_factory=list)
    h2: list[Pooled] = field(default_factory=list)
    open: int = 0
    connecting: int = 0
    #: What the upstream chose (ALPN); None until the first connection says. While a connection is
    #: being made to an upstream that speaks h2, or may, wait for it rather than open another.
    speaks_h2: bool | None = None


class UpstreamPool:
    """mTLS connections to one upstream for one outbound listener (see the module docstring)."""

    def __init__(self, io: Io, engine: Engine, *, listener: str, host: str, port: int, settings: HttpSettings,
                 on_handshake: Callable[[str, float], None] | None = None) -> None:
        self.io, self.engine = io, engine
        self.listener, self.host, self.port = listener, host, port
        self.settings = settings
        self.on_handshake = on_handshake
        self.slots: dict[tuple[int, tuple[str, ...]], _Slot] = {}
        self.freed = io.new_event()
        self.handshakes = 0
        self.reuses = 0

    async def acquire(self, context: ClientContext, expect: PeerMatcher, deadline: float) -> tuple[Pooled, bool]:
        """A connection for one request, and whether it was reused (release it after).

        Raises:
            UpstreamError: no connection freed up before ``deadline``, or connecting, the
                handshake or the ``expect`` check failed.
        """
        key = (context.generation, expect.patterns)
        self._retire_other_keys(key)
        slot = self.slots.setdefault(key, _Slot())
        while (kept := self._reuse(slot, time.time())) is None:
            if slot.open < self.settings.pool_size and not (slot.connecting and slot.speaks_h2 is not False):
                break
            freed = self.freed
            waited, _ = await self.io.run_until(deadline, freed.wait)
            if not waited:
                raise UpstreamError(f"no pooled connection to {self.host}:{self.port} came free in time"
                                    f" (pool_size {self.settings.pool_size})")
        if kept is not None:
            self.reuses += 1
            return kept, True
        slot.open += 1
        slot.connecting += 1
        try:
            conn = await self._connect(context, expect, deadline)
        except BaseException:
            slot.open -= 1
            raise
        finally:
            slot.connecting -= 1
            self._wake()
        slot.speaks_h2 = isinstance(conn.upstream, H2Upstream)
        if isinstance(conn.upstream, H2Upstream):
            slot.h2.append(conn)
        return conn, False

    def _reuse(self, slot: _Slot, now: float) -> Pooled | None:
        """A kept connection fit for one more request (dropping the unfit ones met on the way), or None."""
        for conn in list(slot.h2):
            if not conn.usable(now, self.settings.pool_idle_timeout):
                slot.h2.remove(conn)
                slot.open -= 1
                if isinstance(conn.upstream, H2Upstream) and not conn.upstream.streams:
                    conn.close(self.io)  # else its last stream's release closes it
            elif isinstance(conn.upstream, H2Upstream) and conn.upstream.capacity > 0:
                return conn
        while slot.idle:
            conn = slot.idle.pop()
            if conn.usable(now, self.settings.pool_idle_timeout):
                return conn
            slot.open -= 1
            conn.close(self.io)
        return None

    def _wake(self) -> None:
        woken, self.freed = self.freed, self.io.new_event()
        woken.set()

    def release(self, conn: Pooled, context_generation: int, expect: PeerMatcher) -> None:
        """Give a connection back after a request (closed unless reusable)."""
        slot = self.slots.get((context_generation, expect.patterns))
        if isinstance(conn.upstream, H2Upstream):
            if not conn.upstream.streams:
                conn.idle_since = time.time()
            # Closed only once its last stream is done: other requests may be reading it now.
            if conn.upstream.dead and not conn.upstream.streams:
                if slot is not None and conn in slot.h2:
                    slot.h2.remove(conn)
                    slot.open -= 1
                conn.close(self.io)
        elif slot is not None and conn.upstream.reusable and len(slot.idle) < self.settings.pool_size:
            conn.idle_since = time.time()
            slot.idle.append(conn)
        else:
            if slot is not None:
                slot.open -= 1
            conn.close(self.io)
        self._wake()

    def _retire_other_keys(self, key: tuple[int, tuple[str, ...]]) -> None:
        """A new identity generation or expect: idle connections of other keys are closed now."""
        for other, slot in list(self.slots.items()):
            if other == key:
                continue
            for conn in slot.idle:
                conn.close(self.io)
            slot.open -= len(slot.idle)
            slot.idle.clear()
            for conn in list(slot.h2):
                if isinstance(conn.upstream, H2Upstream) and not conn.upstream.streams:
                    slot.h2.remove(conn)
                    slot.open -= 1
                    conn.close(self.io)
            if slot.open <= 0:
                del self.slots[other]

    async def _connect(self, context: ClientContext, expect: PeerMatcher, deadline: float) -> Pooled:
        sock = await self._tcp(deadline)
        tls = None
        try:
            tls = context.new_connection(sock.fileno(), session_key=f"{self.host}:{self.port}")
            self.engine.offer_alpn(tls, ALPN_PROTOCOLS)
            await self._handshake(tls, sock.fileno(), deadline)
            decision = check_expected_peer(tls.peer_spiffe_id, matcher=expect, listener=self.listener)
            if not decision.allowed:
                raise UpstreamError(f"upstream {self.host}:{self.port} presented {tls.peer_spiffe_id}, which does"
                                    f" not match expect ({expect.describe()})")
            version = from_alpn(self.engine.selected_alpn(tls)) or HttpVersion.H1
            stream = TlsStream(self.io, self.engine, tls, sock.fileno())
            upstream: Upstream
            if version is HttpVersion.H2:
                upstream = H2Upstream(self.io, stream)
                await upstream.start()
            else:
                upstream = H1Upstream(stream)
        except BaseException:
            if tls is not None:
                tls.close()
            self.io.notify_closing(sock)
            close_quietly(sock)
            raise
        return Pooled(upstream=upstream, sock=sock, tls=tls, generation=context.generation,
                      peer_id=tls.peer_spiffe_id, peer_not_after=tls.peer_not_after, idle_since=time.time())

    async def _tcp(self, deadline: float) -> socket.socket:
        async def connect() -> socket.socket:
            return await open_tcp_connection(self.host, self.port, self.io)

        finished, sock = await self.io.run_until(deadline, connect)
        if not finished or sock is None:
            raise UpstreamError(f"connecting to {self.host}:{self.port} timed out")
        return sock

    async def _handshake(self, tls: TlsConnection, fd: int, deadline: float) -> None:
        started = time.monotonic()

        async def steps() -> None:
            while (step := tls.handshake()) != DONE:
                await (self.io.wait_readable(fd) if step == WANT_READ else self.io.wait_writable(fd))

        try:
            finished, _ = await self.io.run_until(deadline, steps)
        except (SidecarError, OSError, EOFError) as exc:
            raise UpstreamError(f"mTLS handshake with {self.host}:{self.port} failed: {exc}") from exc
        if not finished:
            raise UpstreamError(f"mTLS handshake with {self.host}:{self.port} timed out")
        self.handshakes += 1
        if self.on_handshake is not None:
            self.on_handshake(self.listener, time.monotonic() - started)


class AppConnections:
    """Plaintext HTTP/1.1 connections to the app for one inbound connection."""

    def __init__(self, io: Io, host: str, port: int, first: socket.socket | None) -> None:
        self.io, self.host, self.port = io, host, port
        self.idle: list[H1Upstream] = [H1Upstream(PlainStream(io, first))] if first is not None else []
        self.all: list[H1Upstream] = list(self.idle)

    async def acquire(self) -> H1Upstream:
        """An idle app connection, or a new one.

        Raises:
            UpstreamError: the app cannot be reached.
        """
        while self.idle:
            conn = self.idle.pop()
            stream = conn.stream
            if isinstance(stream, PlainStream) and not _peer_closed(stream.sock):
                return conn
            conn.close()
        sock = await open_tcp_connection(self.host, self.port, self.io)
        conn = H1Upstream(PlainStream(self.io, sock))
        self.all.append(conn)
        return conn

    def release(self, conn: H1Upstream) -> None:
        if conn.reusable:
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self.all:
            conn.close()
        self.idle.clear()
