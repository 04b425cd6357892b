"""Runs one connection: executes the core's actions, reports their outcomes as events.

This is the only place the data path touches sockets and the TLS engine,
and the one place their exceptions become events (``_map_*``): engine
errors (TlsError, VerificationError), OSError and UpstreamError never
escape a connection task. Time is read here (``time.time()``) and handed
to the core as ``now``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from typing import AsyncContextManager, Awaitable, Callable

from proxy.connection import events as ev
from proxy.connection.actions import (Action, Close, ConnectUpstream, Log, LogReauth, PeekFirstBytes, RearmRelay,
                                      StartHandshake, StartRelay)
from proxy.connection.handshake import handshake_failed
from proxy.connection.machine import Connection, ConnectionState, Direction
from proxy.errors import CloseReason, HandshakeFailure, SidecarError, TlsError, UpstreamError, Verdict
from proxy.runtime.heap import give_back_heap
from proxy.runtime.base import DataPlane, ListenerPlan
from proxy.runtime.offload import RelayThread
from proxy.runtime.primitives import Io, TaskGroup
from proxy.runtime import reauth
from proxy.runtime.sockets import PlainRelay, close_quietly, destination_of, open_tcp_connection, peek, reset_quietly
from proxy.tls.contract import DONE, WANT_READ, ByteCounts, HubEngine, OffloadedRelay, Relay, TlsConnection


_log = logging.getLogger("spiffe_sidecar")


async def run_connection(io: Io, plane: DataPlane, plan: ListenerPlan, sock: socket.socket,
                         source: str | None = None) -> None:
    """Serve one accepted socket to the end; always closes it and emits one record.

    The one exception: when the connection cannot even be set up (the
    listener's ``context``/``spec`` or the core raise), there is no
    connection to record; that is logged, the socket closed, and the
    listener keeps serving. ``source`` is the peer's address when the listener
    counts pending handshakes (proxy.connection.pending): the runner
    releases its slot when the handshake is over.
    """
    runner: _Runner | None = None
    try:
        try:
            runner = _Runner(io, plane, plan, sock, source)
        except Exception:  # a bug must cost one connection, never the listener (as in _Runner.run)
            _log.exception("connection on %s could not be set up", plan.name)
            io.notify_closing(sock)
            close_quietly(sock)
            return
        await runner.run()
    finally:
        plane.active -= 1
        plan.active -= 1
        if runner is not None:
            runner.handshake_over()
        elif plan.handshake_limits is not None and source is not None:
            plan.pending.leave(source)


class _Runner:
    """The per-connection executor (one per task; never shared)."""

    def __init__(self, io: Io, plane: DataPlane, plan: ListenerPlan, sock: socket.socket,
                 source: str | None = None) -> None:
        self.io, self.plane, self.plan = io, plane, plan
        #: The pending-handshake slot this connection holds (None: none, or released).
        self.pending_source = source if plan.handshake_limits is not None else None
        self.accepted_sock: socket.socket | None = sock
        self.upstream: socket.socket | None = None
        self.tls: TlsConnection | None = None
        self.relay: ByteCounts | None = None  # the event-loop Relay or the relay thread's handle
        self.group: TaskGroup | None = None
        self.pending: deque[Action] = deque()
        self.locks: dict[tuple[int, bool], AsyncContextManager[object]] = {}
        #: Per relay direction (event-loop relay): its pump waits for the TLS socket to drain.
        self.write_waits = [False, False]
        #: The timers a re-authentication just set (runtime/reauth.py reads it after feed()).
        self.rearmed: RearmRelay | None = None
        now = time.time()
        self.context = plan.context()
        self.destination = destination_of(sock) if plan.transparent else None
        self.spec = plan.spec(self.destination)
        self.conn = Connection(self.spec, now=now)

    async def run(self) -> None:
        ready = self.context is not None
        self.pending.extend(self.conn.start(time.time(), ready=ready, active=self.plan.active - 1))
        try:
            while self.pending:
                await self._execute(self.pending.popleft())
        except Exception:  # a bug must cost one connection, never the listener
            _log.exception("connection on %s failed unexpectedly", self.plan.name)
            self._abort(CloseReason.INTERNAL)
        finally:
            if self.conn.state is not ConnectionState.CLOSED:
                self._abort(CloseReason.DRAINED)

    def feed(self, event: ev.Event) -> None:
        """Hand the core an event; queue its actions (a re-authentication's log and timers act at once)."""
        closing = False
        for action in self.conn.handle(event):
            if isinstance(action, LogReauth):
                self.plane.emit_reauth(action.record)  # now, not when a long stream ends
            elif isinstance(action, RearmRelay):
                self.rearmed = action
            else:
                closing = closing or isinstance(action, Close)
                self.pending.append(action)
        if closing and self.group is not None:
            self.group.cancel()

    async def _execute(self, action: Action) -> None:
        if isinstance(action, StartHandshake):
            await self._handshake(action)
        elif isinstance(action, PeekFirstBytes):
            await self._peek(action)
        elif isinstance(action, ConnectUpstream):
            await self._connect(action)
        elif isinstance(action, StartRelay):
            await self._relay(action)
        elif isinstance(action, Close):
            self._close_sockets(abort=action.abort)
            self.feed(ev.Closed(time.time(), *self._byte_counts()))
        elif isinstance(action, Log):
            self.plane.emit(action.record)

    # --- sides ---------------------------------------------------------

    @property
    def tls_sock(self) -> socket.socket | None:
        return self.accepted_sock if self.plan.direction is Direction.INBOUND else self.upstream

    @property
    def plain_sock(self) -> socket.socket | None:
        return self.upstream if self.plan.direction is Direction.INBOUND else self.accepted_sock

    @property
    def tls_fd(self) -> int:
        """The TLS socket's fd; only asked while the connection relays, when the socket exists."""
        sock = self.tls_sock
        assert sock is not None, "tls_fd asked before the TLS socket exists"
        return sock.fileno()

    def tls_write_pending(self) -> bool:
        """True while a relay direction waits to write TLS (no handshake record may go out then)."""
        return self.write_waits[0] or self.write_waits[1]

    # --- handshake -----------------------------------------------------

    async def _handshake(self, action: StartHandshake) -> None:
        assert self.tls_sock is not None and self.context is not None
        if self.plan.direction is Direction.INBOUND and not await self._client_hello_arrived(action.deadline):
            self.feed(ev.DeadlineExpired(time.time(), ev.DeadlineKind.HANDSHAKE))
            return
        try:
            self.tls = self._new_tls(offer_session=True)
            if self.spec.http is not None and self.plan.direction is Direction.INBOUND:
                from proxy.http.detect import ALPN_PROTOCOLS

                self.plane.engine.offer_alpn(self.tls, ALPN_PROTOCOLS)
        except (SidecarError, OSError) as exc:
            self.feed(handshake_failed(time.time(), exc))
            return
        observe = self.plane.handshake_observer  # None when metrics are off: no clock read then
        started = time.monotonic() if observe is not None else 0.0
        finished, event = await self.io.run_until(action.deadline, self._handshake_steps)
        self.handshake_over()
        if finished and isinstance(event, ev.HandshakeFailed) and self._resumption_refused(event):
            # Same deadline: the retry spends what is left of the handshake budget.
            failed = event
            finished, event = await self.io.run_until(action.deadline, lambda: self._retry_without_session(failed))
        elif isinstance(event, ev.HandshakeCompleted) and event.resumed and self.plane.resumption.backing_off:
            self.plane.resumption.resumed(self._session_key() or "")
        if observe is not None and isinstance(event, ev.HandshakeCompleted):
            observe(self.spec.listener, time.monotonic() - started)
        self.feed(event if finished and event is not None
                   else ev.DeadlineExpired(time.time(), ev.DeadlineKind.HANDSHAKE))

    async def _client_hello_arrived(self, deadline: float) -> bool:
        """Wait for the peer's first bytes before any TLS state exists (False: the deadline came first).

        A socket that never sends a ClientHello then costs no SSL object and
        no handshake buffers while it waits out its handshake_timeout (issue 11.5).
        """
        sock = self.tls_sock
        assert sock is not None  # the accepted socket: set until the connection closes
        fd = sock.fileno()
        finished, _ = await self.io.run_until(deadline, lambda: self.io.wait_readable(fd))
        return finished

    def handshake_over(self) -> None:
        """Release this connection's pending-handshake slot (idempotent); trim the heap after a flood."""
        source, self.pending_source = self.pending_source, None
        if source is not None and self.plan.pending.leave(source):
            give_back_heap(self.plan.name)

    def _session_key(self) -> str | None:
        """The outbound connection's session key; None when resumption is off for the listener."""
        return (self.spec.session_key or self.plan.session_key) if self.spec.session_resumption else None

    def _new_tls(self, *, offer_session: bool) -> TlsConnection:
        sock = self.tls_sock
        assert sock is not None and self.context is not None
        fd = sock.fileno()
        if self.plan.direction is Direction.INBOUND:
            if self.spec.session_resumption:
                return self.context.server.new_connection(fd)
            return self.context.server.new_connection(fd, resumable=False)
        key = self._session_key()
        if key is None:
            return self.context.client.new_connection(fd)
        offer = offer_session and self.plane.resumption.may_offer(key, time.time())
        return self.context.client.new_connection(fd, session_key=key, offer_session=offer)

    def _resumption_refused(self, event: ev.HandshakeFailed) -> bool:
        """True when an outbound handshake that offered a session failed the way a server that cannot resume fails.

        Certificate failures are the peer's identity, not the session: no retry for those.
        """
        return (self.plan.direction is Direction.OUTBOUND and self.tls is not None and self.tls.session_offered
                and isinstance(event.reason, HandshakeFailure) and event.reason not in _NOT_A_RESUMPTION_FAILURE)

    async def _retry_without_session(self, failed: ev.HandshakeFailed) -> ev.Event:
        """The upstream refused the offered session: drop its sessions, back off, one full handshake.

        A new TCP connection (the refused one ended with an alert), on the
        same deadline as the first attempt (issue 10.3).
        """
        key = self._session_key()
        assert key is not None and self.context is not None and isinstance(failed.reason, HandshakeFailure)
        self.context.client.drop_sessions(key)
        backoff = self.plane.resumption.refused(key, time.time())
        self.plane.count_resumption_fallback(self.spec.listener, failed.reason)
        _log.info("listener %s: upstream %s refused a resumed session (%s); retrying with a full handshake,"
                  " no sessions offered to it for %gs", self.spec.listener, key, failed.detail, backoff)
        self._drop_upstream()
        try:
            self.upstream = await open_tcp_connection(self.spec.upstream_host, self.spec.upstream_port, self.io)
            self.tls = self._new_tls(offer_session=False)
        except (SidecarError, OSError) as exc:
            return ev.HandshakeFailed(time.time(), failed.reason, f"{failed.detail}; full-handshake retry: {exc}")
        return await self._handshake_steps()

    def _drop_upstream(self) -> None:
        """Close the TLS state and the upstream socket of a failed outbound attempt."""
        if self.tls is not None:
            try:
                self.tls.close()
            except (SidecarError, OSError):
                pass
        self.tls = None
        if self.upstream is not None:
            self.io.notify_closing(self.upstream)
            close_quietly(self.upstream)
            self.upstream = None

    async def _handshake_steps(self) -> ev.Event:
        sock, t = self.tls_sock, self.tls
        assert sock is not None and t is not None
        fd = sock.fileno()
        try:
            while (step := t.handshake()) != DONE:
                await (self.io.wait_readable(fd) if step == WANT_READ else self.io.wait_writable(fd))
        except (SidecarError, OSError, EOFError) as exc:
            return handshake_failed(time.time(), exc)
        return ev.HandshakeCompleted(time.time(), t.peer_spiffe_id, t.peer_not_after, t.version, t.cipher,
                                     bool(t.resumed))

    async def _peek(self, action: PeekFirstBytes) -> None:
        sock = self.accepted_sock
        assert sock is not None

        async def first_bytes() -> bytes:
            while True:
                data = peek(sock, action.count)
                if data is not None and (len(data) >= action.count or data == b""):
                    return data
                await self.io.wait_readable(sock.fileno())

        try:
            finished, data = await self.io.run_until(action.deadline, first_bytes)
        except OSError as exc:
            self.feed(handshake_failed(time.time(), exc))
            return
        self.feed(ev.FirstBytesPeeked(time.time(), data) if finished and data is not None
                   else ev.DeadlineExpired(time.time(), ev.DeadlineKind.HANDSHAKE))

    # --- upstream ------------------------------------------------------

    async def _connect(self, action: ConnectUpstream) -> None:
        async def connect() -> ev.Event:
            try:
                self.upstream = await open_tcp_connection(action.host, action.port, self.io)
            except (UpstreamError, OSError) as exc:
                return ev.UpstreamFailed(time.time(), str(exc))
            return ev.UpstreamConnected(time.time())

        finished, event = await self.io.run_until(action.deadline, connect)
        self.feed(event if finished and event is not None
                   else ev.DeadlineExpired(time.time(), ev.DeadlineKind.CONNECT))

    # --- relay ---------------------------------------------------------

    async def _relay(self, action: StartRelay) -> None:
        self.handshake_over()  # a permissive listener's plaintext connection never handshakes
        if self.spec.http is not None:  # protocol: http serves requests, not bytes (proxy.http)
            from proxy.runtime.http.serve import serve_http

            await serve_http(self, action)
            return
        relays = self.plane.relay_thread
        if action.tls and relays is not None:
            await self._relay_on_thread(relays, action)
            return
        engine = self.plane.engine
        size = action.buffer_size or self.plane.buffer_size
        tls_sock, plain_sock = self.tls_sock, self.plain_sock
        assert tls_sock is not None and plain_sock is not None
        relay: Relay
        if action.tls:
            assert self.tls is not None
            relay = engine.Relay(self.tls, plain_sock.fileno(), size)
        else:
            relay = PlainRelay(engine, tls_sock, plain_sock, size)
        self.relay = relay
        async with self.io.open_group() as group:
            self.group = group
            group.start_soon(self._pump, relay.tls_to_plain, ev.RelayDirection.TLS_TO_PLAIN)
            group.start_soon(self._pump, relay.plain_to_tls, ev.RelayDirection.PLAIN_TO_TLS)
            if action.idle_timeout:
                group.start_soon(self._watch_idle, action.idle_timeout)
            if action.lifetime_deadline is not None or action.reauth_at is not None:
                group.start_soon(reauth.watch_expiry, self, action.lifetime_deadline, action.lifetime_kind,
                                 action.reauth_at)
        self.group = None

    async def _relay_on_thread(self, relays: RelayThread, action: StartRelay) -> None:
        """The relay on the extension's relay thread (offload.py): wait for its end, then report it.

        A wake-up while the hub still relays is a notice (a re-authentication's
        answer, runtime/reauth.py): re-authorize, then rearm or take it back.
        """
        tls_sock, plain_sock = self.tls_sock, self.plain_sock
        assert tls_sock is not None and plain_sock is not None and self.tls is not None
        # self.relay is the hub's handle: its byte counts are what _abort records if we are cancelled.
        self.relay = handle = relays.hand_over(self.tls, tls_sock.fileno(), plain_sock.fileno(),
                                               idle_timeout=action.idle_timeout,
                                               lifetime_deadline=action.lifetime_deadline,
                                               buffer_size=action.buffer_size, reauth_at=action.reauth_at)
        engine = relays.engine
        while True:
            await relays.wait(self.io, handle)
            if handle.outcome != engine.RELAY_RUNNING:
                break
            timers = reauth.on_notice(self, engine, handle.take_notice())  # still relaying: a notice
            if self.conn.state is not ConnectionState.RELAYING:
                relays.cancel(handle)  # refused: the queued Close aborts it
                return
            if timers is not None:
                relays.rearm(handle, timers.lifetime_deadline, timers.reauth_at)
                action = StartRelay(action.idle_timeout, timers.lifetime_deadline, timers.lifetime_kind)
        for event in _offloaded_outcome(engine, handle, action, self.tls):
            self.feed(event)

    async def _pump(self, step: Callable[[], int], direction: ev.RelayDirection) -> None:
        engine = self.plane.engine
        tls_sock, plain_sock = self.tls_sock, self.plain_sock
        assert tls_sock is not None and plain_sock is not None
        tls_fd, plain_fd = tls_sock.fileno(), plain_sock.fileno()
        waits = {engine.WANT_TLS_READ: (tls_fd, True), engine.WANT_TLS_WRITE: (tls_fd, False),
                 engine.WANT_PLAIN_READ: (plain_fd, True), engine.WANT_PLAIN_WRITE: (plain_fd, False)}
        side = direction is ev.RelayDirection.PLAIN_TO_TLS
        writing = engine.WANT_TLS_WRITE
        try:
            while (status := step()) != engine.EOF:
                self.write_waits[side] = status == writing
                await self._wait(*waits[status])
        except (SidecarError, OSError) as exc:
            self.feed(_relay_failure(self.tls, exc))
            return
        self.write_waits[side] = False
        self.feed(ev.DirectionFinished(time.time(), direction))

    async def wait_tls(self, fd: int, *, readable: bool) -> None:
        """Wait on the TLS fd, taking turns with the relay's pumps."""
        await self._wait(fd, readable)

    async def _wait(self, fd: int, readable: bool) -> None:
        # Both directions share the TLS fd; trio forbids two waiters on one
        # (fd, kind) and asyncio keeps only one callback, so they take turns.
        lock = self.locks.get((fd, readable))
        if lock is None:
            lock = self.locks[(fd, readable)] = self.io.new_lock()
        async with lock:
            await (self.io.wait_readable(fd) if readable else self.io.wait_writable(fd))

    async def _watch_idle(self, idle_timeout: float) -> None:
        last, last_change = -1, time.monotonic()
        while True:
            moved = sum(self._byte_counts())
            now = time.monotonic()
            if moved != last:
                last, last_change = moved, now
            elif now - last_change >= idle_timeout:
                self.feed(ev.DeadlineExpired(time.time(), ev.DeadlineKind.IDLE))
                return
            await self.io.sleep(max(0.05, min(idle_timeout / 4, idle_timeout - (now - last_change))))

    # --- closing -------------------------------------------------------

    def _byte_counts(self) -> tuple[int, int]:
        if self.relay is None:
            return 0, 0
        return int(self.relay.bytes_tls_to_plain), int(self.relay.bytes_plain_to_tls)

    def _close_sockets(self, *, abort: bool = False) -> None:
        """Close both sides; ``abort`` (a stream cut short): no close_notify and a reset on both sockets."""
        if self.tls is not None:
            if self.conn.facts.decision is not Verdict.ALLOW:
                # A refused peer (policy, expect, verification) leaves no session
                # behind: it would hold the peer's chain in memory (issue 11.1).
                self.tls.forget_session()
            try:
                if self.conn.facts.tls_version and not abort:
                    # One non-blocking close_notify attempt: a peer refused before any
                    # byte was relayed (denied, say) sees a clean end of an empty stream.
                    self.tls.shutdown()
            except (SidecarError, OSError):
                pass
            try:
                self.tls.close()
            except (SidecarError, OSError):
                pass
        for sock in (self.accepted_sock, self.upstream):
            if sock is not None:
                self.io.notify_closing(sock)
                (reset_quietly if abort else close_quietly)(sock)
        self.accepted_sock = self.upstream = None

    def _abort(self, reason: CloseReason) -> None:
        """Cancelled from outside (stop) or broken: close now and still leave the one record."""
        now = time.time()
        if self.conn.state is ConnectionState.CLOSED:
            return
        # A Close already queued (and not yet run) or the one the stop yields says whether it cuts a stream.
        abort = any(isinstance(a, Close) and a.abort for a in self.pending)
        if self.conn.state is not ConnectionState.CLOSING:
            abort = any(isinstance(a, Close) and a.abort for a in self.conn.handle(ev.StopRequested(now, reason)))
        self._close_sockets(abort=abort)
        for action in self.conn.handle(ev.Closed(now, *self._byte_counts())):
            if isinstance(action, Log):
                self.plane.emit(action.record)


#: Handshake failures that say the peer's certificate (not our offered session) is the problem.
_NOT_A_RESUMPTION_FAILURE = frozenset({HandshakeFailure.TIMEOUT, HandshakeFailure.VERIFY,
                                       HandshakeFailure.NO_CLIENT_CERT})


def _offloaded_outcome(engine: HubEngine, handle: OffloadedRelay, action: StartRelay,
                       tls: TlsConnection) -> list[ev.Event]:
    """The events of a relay the hub handed back, in the order the event-loop relay reports them."""
    now = time.time()
    if handle.outcome == engine.RELAY_IDLE:
        return [ev.DeadlineExpired(now, ev.DeadlineKind.IDLE)]
    if handle.outcome == engine.RELAY_LIFETIME:
        if tls.reauth_pending:
            return [ev.ReauthFailed(now, reauth.NO_ANSWER, "the peer did not answer the certificate request before"
                                    " its certificate expired")]
        return [ev.DeadlineExpired(now, action.lifetime_kind)]
    events: list[ev.Event] = []
    if handle.tls_to_plain_done:
        events.append(ev.DirectionFinished(now, ev.RelayDirection.TLS_TO_PLAIN))
    if handle.plain_to_tls_done:
        events.append(ev.DirectionFinished(now, ev.RelayDirection.PLAIN_TO_TLS))
    if handle.outcome == engine.RELAY_FAILED:
        events.append(_relay_failure(tls, handle.error))
    return events


def _relay_failure(tls: TlsConnection | None, exc: BaseException | None) -> ev.Event:
    """A relay that broke; while a re-authentication was outstanding, that is what failed."""
    if tls is not None and tls.reauth_pending:
        return reauth.failure(tls, exc)
    return _map_relay_error(exc)


def _map_relay_error(exc: BaseException | None) -> ev.RelayFailed:
    """Mid-stream failures: a TLS error or a socket error both end the connection as a reset."""
    if isinstance(exc, TlsError):
        return ev.RelayFailed(time.time(), CloseReason.RESET, f"TLS {exc.reason.value}: {exc.detail}")
    if isinstance(exc, OSError):
        return ev.RelayFailed(time.time(), CloseReason.RESET, exc.strerror or str(exc))
    return ev.RelayFailed(time.time(), CloseReason.INTERNAL, f"{type(exc).__name__}: {exc}")
