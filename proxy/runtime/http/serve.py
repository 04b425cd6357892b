"""HTTP listeners' data path: what the runner does instead of relaying bytes.

Inbound (after the mTLS handshake and the connection-level verdict, with
the app connected): the TLS connection becomes a byte stream, ALPN (or the
first bytes) picks the HTTP/1.1 or HTTP/2 front, and every request is
normalized, decided by the policy, refused (403, that request only) or sent
to the app with the caller's identity in ``x-forwarded-client-cert``.

Outbound: the app's plaintext connection is served by a front the same
way, and each request goes to the upstream sidecar over the listener's
pool of mTLS connections (``proxy.runtime.http.pool``).

Either way one access-log line per request (``proxy.runtime.http.records``), and
the connection's own record when it closes, as on every listener.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Callable, Protocol

from proxy.connection import events as ev
from proxy.connection.actions import StartRelay
from proxy.connection.events import DecisionLike
from proxy.connection.machine import Connection, ConnectionSpec, Direction
from proxy.errors import CloseReason, HttpRequestError, SidecarError, TlsError, UpstreamError
from proxy.http.detect import SNIFF_BYTES, HttpVersion, NotHttp, from_alpn, sniff
from proxy.http.h1 import Headers, joined, values
from proxy.http.normalize import normalize_target
from proxy.http.settings import HttpSpec
from proxy.http.xfcc import HEADER as XFCC, element, leaf_hash, outgoing_value
from proxy.policy.http_match import RequestView
from proxy.runtime.http.exchange import Exchange, Handler, Outcome, Recorder, Summary, Verdict, framing
from proxy.runtime.http.front_h1 import H1Front
from proxy.runtime.http.front_h2 import H2Front
from proxy.runtime.http.pool import AppConnections, UpstreamPool
from proxy.runtime.http.records import RequestRecord, print_request
from proxy.runtime.base import DataPlane, ListenerPlan
from proxy.runtime.http.streams import ByteStream, PlainStream, TlsStream
from proxy.runtime.primitives import Io, TaskGroup

if TYPE_CHECKING:
    from proxy.identity.swap import ContextPair
from proxy.tls.contract import ByteCounts, TlsConnection

_XFCC = XFCC.encode()
#: The policy's answer for one request: (peer ID, request) -> decision.
Decide = Callable[[str, RequestView], DecisionLike]
# hpack logs every header value at DEBUG (Authorization, cookies): never let a debug log level expose them.
logging.getLogger("hpack").setLevel(logging.INFO)
logging.getLogger("h2").setLevel(logging.INFO)


class ConnectionRunner(Protocol):
    """What the HTTP session needs of the connection runner (proxy.runtime.runner._Runner).

    The session takes the relay's place: it reports to the same machine
    through ``_feed``, lets the runner's idle and lifetime watches run, and
    takes over the sockets the runner hands it (the app's, on inbound).
    """

    io: Io
    plane: DataPlane
    plan: ListenerPlan
    spec: ConnectionSpec
    conn: Connection
    context: ContextPair | None
    tls: TlsConnection | None
    relay: ByteCounts | None
    group: TaskGroup | None
    accepted_sock: socket.socket | None
    upstream: socket.socket | None

    @property
    def tls_sock(self) -> socket.socket | None: ...

    def feed(self, event: ev.Event) -> None: ...

    async def _watch_idle(self, idle_timeout: float) -> None: ...


class _Counted:
    """Byte counters for the runner's idle watch and record on an outbound (plaintext) connection."""

    def __init__(self, stream: PlainStream) -> None:
        self.stream = stream
        self.bytes_tls_to_plain = 0
        self.bytes_plain_to_tls = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self.stream.receive(max_bytes)
        self.bytes_plain_to_tls += len(data)
        return data

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)
        self.bytes_tls_to_plain += len(data)

    def close(self) -> None:
        pass  # the runner owns the app's socket


async def serve_http(runner: ConnectionRunner, action: StartRelay) -> None:
    """Serve one HTTP listener connection to the end, reporting to the machine as the relay would."""
    io = runner.io
    session: _Inbound | _Outbound = _Inbound(runner) if runner.plan.direction is Direction.INBOUND \
        else _Outbound(runner)
    async with io.open_group() as group:
        runner.group = group
        group.start_soon(_serve_then_report, runner, session)
        if action.idle_timeout:
            group.start_soon(runner._watch_idle, action.idle_timeout)
        if action.lifetime_deadline is not None:
            # No post-handshake re-authentication on HTTP listeners yet: they close at the bound (the
            # peer's NotAfter or max_lifetime), as every listener did before issue 11.2.
            group.start_soon(_watch_lifetime, runner, action.lifetime_deadline, action.lifetime_kind)
    runner.group = None


async def _watch_lifetime(runner: ConnectionRunner, deadline: float, kind: ev.DeadlineKind) -> None:
    await runner.io.sleep(max(0.0, deadline - time.time()))
    runner.feed(ev.DeadlineExpired(time.time(), kind))


async def _serve_then_report(runner: ConnectionRunner, session: _Inbound | _Outbound) -> None:
    try:
        await session.serve()
    except NotHttp as exc:
        runner.feed(ev.RelayFailed(time.time(), CloseReason.NOT_HTTP, str(exc)))
        return
    except (SidecarError, OSError) as exc:
        reason = CloseReason.RESET if isinstance(exc, (TlsError, OSError)) else CloseReason.INTERNAL
        runner.feed(ev.RelayFailed(time.time(), reason, str(exc)))
        return
    now = time.time()
    runner.feed(ev.DirectionFinished(now, ev.RelayDirection.TLS_TO_PLAIN))
    runner.feed(ev.DirectionFinished(now, ev.RelayDirection.PLAIN_TO_TLS))


async def _detect(stream: ByteStream, alpn: str) -> tuple[HttpVersion, bytes]:
    """ALPN's choice, else the first bytes' (which are returned to be parsed)."""
    chosen = from_alpn(alpn)
    if chosen is not None:
        return chosen, b""
    first = b""
    while True:
        data = await stream.receive(SNIFF_BYTES)
        first += data
        version = sniff(first, eof=not data)
        if version is not None:
            return version, first


def _front(runner: ConnectionRunner, stream: ByteStream, version: HttpVersion, prefetched: bytes, handler: Handler,
           record: Recorder) -> H1Front | H2Front:
    spec = _http_spec(runner)
    if version is HttpVersion.H2:
        return H2Front(runner.io, stream, handler, record, max_head=spec.settings.max_head_bytes,
                       prefetched=prefetched)
    return H1Front(stream, handler, record, max_head=spec.settings.max_head_bytes, prefetched=prefetched)


def _http_spec(runner: ConnectionRunner) -> HttpSpec:
    spec = runner.spec.http
    assert spec is not None, "serve_http runs on protocol: http listeners only"
    return spec


def _recorder(runner: ConnectionRunner, peer_id: str | None) -> Recorder:
    plane = runner.plane
    sink = plane.emit_request or print_request
    listener, direction = runner.spec.listener, runner.spec.direction.value

    def record(summary: Summary, verdict: Verdict, seconds: float) -> None:
        sink(RequestRecord(listener=listener, direction=direction, method=summary.method,
                           path=verdict.path if verdict.path is not None else summary.target[:256],
                           status=summary.status, peer_id=peer_id, rule=verdict.rule,
                           decision=verdict.outcome.value, reason=verdict.reason, bytes_in=summary.bytes_in,
                           bytes_out=summary.bytes_out, duration=seconds, http_version=summary.version.value,
                           stream_id=summary.stream_id, upstream=verdict.upstream))
    return record


def _with_host(exchange: Exchange, drop: frozenset[bytes] = frozenset()) -> Headers:
    """The request's headers for an HTTP/1.1 hop: Host from the authority, first."""
    rest = [(n, v) for n, v in exchange.headers if n != b"host" and n not in drop]
    return ([(b"host", exchange.authority.encode("latin-1"))] if exchange.authority else []) + rest


# --- inbound -----------------------------------------------------------------------


class _Inbound:
    """One inbound connection's HTTP session (built before any task runs: the idle watch reads its counters)."""

    def __init__(self, runner: ConnectionRunner) -> None:
        engine, io = runner.plane.engine, runner.io
        tls, tls_sock, pair = runner.tls, runner.tls_sock, runner.context
        assert tls is not None and tls_sock is not None and pair is not None, "the handshake came first"
        self.runner, self.tls, self.http = runner, tls, _http_spec(runner)
        self.stream = TlsStream(io, engine, tls, tls_sock.fileno(), runner.spec.buffer_size or runner.plane.buffer_size)
        runner.relay = self.stream.relay  # byte counts for the idle watch and the connection record
        self.apps = AppConnections(io, runner.spec.upstream_host, runner.spec.upstream_port, runner.upstream)
        runner.upstream = None  # the app connections are apps' now
        self.peer_id = runner.conn.facts.peer_id or ""
        self.own = element(by=pair.server.material.spiffe_id, uri=self.peer_id,
                           leaf_sha256=leaf_hash(engine.peer_leaf_der(tls)))

    def _current_decide(self) -> Decide:
        """The policy in force now: a reload reaches the next request of a kept (e.g. pooled) connection."""
        spec = self.runner.plan.spec(None)  # the listener's current spec: a dict lookup, built per reload
        decide = spec.http.decide if spec.http is not None else None
        if decide is None:
            decide = self.http.decide
        assert decide is not None, "an inbound HTTP spec always decides"
        return decide

    async def serve(self) -> None:
        runner, stream = self.runner, self.stream
        try:
            version, prefetched = await _detect(stream, runner.plane.engine.selected_alpn(self.tls))
            handler = _inbound_handler(self.http, self.apps, self.peer_id, self.own, self._current_decide)
            await _front(runner, stream, version, prefetched, handler, _recorder(runner, self.peer_id)).serve()
            await stream.finish()
        finally:
            self.apps.close()
            stream.close()


def _inbound_handler(spec: HttpSpec, apps: AppConnections, peer_id: str, own_xfcc: str,
                     current_decide: Callable[[], Decide]) -> Handler:
    mode = spec.settings.xfcc

    async def handle(exchange: Exchange) -> Verdict:
        try:
            target = normalize_target(exchange.target)
        except HttpRequestError as exc:
            await exchange.refuse(400)
            return Verdict(outcome=Outcome.REJECT, reason=exc.rejection.value, path=exchange.target[:256])
        view = RequestView.of(exchange.method, target.path, joined(_with_host(exchange)))
        decision = current_decide()(peer_id, view)
        reason = decision.reason.value if decision.reason is not None else None
        if not decision.allowed:
            await exchange.refuse(403)
            return Verdict(outcome=Outcome.DENY, rule=decision.rule, reason=reason, path=target.path)
        headers = _with_host(exchange, frozenset({_XFCC}))
        xfcc = outgoing_value(mode, values(exchange.headers, _XFCC), own_xfcc)
        if xfcc is not None:
            headers.append((_XFCC, xfcc.encode("latin-1")))
        verdict = Verdict(outcome=Outcome.ALLOW, rule=decision.rule, path=target.path)
        try:
            app = await apps.acquire()
        except (UpstreamError, OSError):
            await exchange.refuse(502)
            return Verdict(outcome=Outcome.ALLOW, rule=decision.rule, reason="upstream_failed", path=target.path)
        try:
            await app.forward(exchange, target.target, framing(headers, exchange.content_length, exchange.has_body))
        except UpstreamError:
            verdict.reason = "upstream_failed"
            if exchange.status == 0:
                await exchange.refuse(502)
        finally:
            apps.release(app)
        return verdict

    return handle


# --- outbound ----------------------------------------------------------------------


class _Outbound:
    """One app connection's HTTP session on an outbound listener."""

    def __init__(self, runner: ConnectionRunner) -> None:
        assert runner.accepted_sock is not None
        self.runner = runner
        self.counted = _Counted(PlainStream(runner.io, runner.accepted_sock))
        runner.relay = self.counted

    async def serve(self) -> None:
        runner = self.runner
        spec = _http_spec(runner)
        version, prefetched = await _detect(self.counted, "")
        handler = _outbound_handler(runner, spec, _pool_for(runner, spec))
        await _front(runner, self.counted, version, prefetched, handler, _recorder(runner, None)).serve()


def _pool_for(runner: ConnectionRunner, spec: HttpSpec) -> UpstreamPool:
    plane, name = runner.plane, runner.spec.listener
    key = (name, runner.spec.upstream_host, runner.spec.upstream_port)
    pool = plane.http_pools.get(key)
    if pool is None:
        metrics = plane.http_metrics
        observe = plane.handshake_observer

        def on_handshake(listener: str, seconds: float) -> None:
            if observe is not None:
                observe(listener, seconds)
            if metrics is not None:
                metrics.pool_handshakes.labels(listener).inc()

        pool = plane.http_pools[key] = UpstreamPool(
            runner.io, plane.engine, listener=name, host=runner.spec.upstream_host,
            port=runner.spec.upstream_port, settings=spec.settings, on_handshake=on_handshake)
    assert isinstance(pool, UpstreamPool)
    return pool


def _outbound_handler(runner: ConnectionRunner, spec: HttpSpec, pool: UpstreamPool) -> Handler:
    assert spec.expect is not None
    expect = spec.expect
    metrics = runner.plane.http_metrics

    async def handle(exchange: Exchange) -> Verdict:
        pair = runner.plan.context()  # the current identity: a rotation reaches the next request
        context = pair.client if pair is not None else None
        if context is None:
            await exchange.refuse(503)
            return Verdict(outcome=Outcome.REJECT, reason="not_ready")
        headers = framing(_with_host(exchange), exchange.content_length, exchange.has_body)
        for attempt in (0, 1):
            try:
                conn, reused = await pool.acquire(context, expect, time.time() + runner.spec.connect_timeout)
            except (UpstreamError, OSError):
                await exchange.refuse(502)
                return Verdict(outcome=Outcome.REJECT, reason="upstream_failed")
            if reused and metrics is not None:
                metrics.pool_reuses.labels(runner.spec.listener).inc()
            try:
                await conn.upstream.forward(exchange, exchange.target, headers)
            except UpstreamError:
                pool.release(conn, context.generation, expect)
                # A kept connection the upstream closed meanwhile: one retry on a fresh one, when safe.
                if attempt == 0 and reused and exchange.status == 0 and not exchange.has_body:
                    continue
                if exchange.status == 0:
                    await exchange.refuse(502)
                return Verdict(outcome=Outcome.REJECT, reason="upstream_failed", upstream=conn.peer_id)
            pool.release(conn, context.generation, expect)
            return Verdict(outcome=Outcome.ALLOW, upstream=conn.peer_id)
        raise AssertionError("unreachable")

    return handle
