"""The admin HTTP endpoint: /live, /ready, /metrics, /config, /identity, /policy/explain.

It runs on a thread of its own with the standard library's
``ThreadingHTTPServer`` rather than on the data plane's event loop: it is
not the hot path, one implementation then serves both runtimes (trio and
uvloop) identically, prometheus-client's exposition is synchronous anyway,
and it keeps answering while the loop is busy or draining (an operator's
probe must not queue behind data-path work). Everything it reads is a
single reference load of an immutable object (config, policy set, identity
snapshot, listener counters), so it needs no lock shared with the data path.

Bound at start (``open_admin``) so a bad or busy address fails the start-up
with exit 1 like a listener does; loopback only unless ``allow_non_loopback``
(enforced by the config loader).

Bounded, because probes and scrapers are not the only clients: at most
``MAX_CONNECTIONS`` connections are served at once (one thread each; the
next ones get a 503 and are closed at once), a connection that sends
nothing for ``IDLE_TIMEOUT`` seconds is closed, running out of file
descriptors backs off instead of spinning on a listening socket that stays
readable, and a client that resets or times out costs a debug line, not a
traceback on stderr.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from proxy.errors import ListenError, SidecarError
from proxy.runtime.sockets import RESOURCE_ERRNOS

if TYPE_CHECKING:
    from proxy.config.model import SidecarConfig
    from proxy.identity.store import IdentityStore
    from proxy.identity.swap import ContextSwap
    from proxy.operations.live import LiveSettings
    from proxy.operations.metrics import Metrics
    from proxy.operations.reload import ReloadStatus
    from proxy.runtime.base import DataPlane

_log = logging.getLogger("spiffe_sidecar")
JSON = "application/json"
#: Connections served at once; more are answered 503 and closed (each served one holds a thread).
MAX_CONNECTIONS = 32
#: Seconds a connection may stay silent (before a request, or between keep-alive requests).
IDLE_TIMEOUT = 5.0
#: Back-off when accept() reports resource exhaustion, and how often that is said at most.
ACCEPT_BACKOFF = 0.1
ACCEPT_ERROR_EVERY = 10.0
_BUSY_BODY = b"admin endpoint busy, retry\n"
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class HasReloadStatus(Protocol):
    """The reload watch as the admin endpoint sees it: the last outcome."""

    @property
    def status(self) -> ReloadStatus: ...


class Observed(Protocol):
    """What the admin endpoint reads of a running sidecar (read-only; ``Sidecar`` is one).

    Naming only this keeps admin.py below the composition root instead of
    in a circle with it, and says what /ready, /identity, /config and
    /policy/explain may look at.
    """

    @property
    def draining(self) -> bool: ...
    @property
    def plane(self) -> DataPlane | None: ...
    @property
    def swap(self) -> ContextSwap: ...
    @property
    def store(self) -> IdentityStore: ...
    @property
    def reloader(self) -> HasReloadStatus | None: ...
    @property
    def metrics(self) -> Metrics | None: ...
    @property
    def config(self) -> SidecarConfig: ...
    @property
    def live(self) -> LiveSettings: ...


def readiness(sidecar: Observed, now: float) -> tuple[bool, dict[str, Any]]:
    """(ready, detail): ready only with a usable SVID, every listener bound and not draining."""
    reasons: list[str] = []
    if sidecar.draining:
        reasons.append("draining: not accepting new connections")
    if sidecar.plane is None:
        reasons.append("listeners not bound")
    pair = sidecar.swap.current_at(now)
    if pair is None:
        try:
            sidecar.store.require(now)
            reasons.append(f"no TLS context: {sidecar.swap.last_error}")
        except SidecarError as exc:
            reasons.append(str(exc))
    detail: dict[str, Any] = {"ready": not reasons, "reasons": reasons}
    if sidecar.reloader is not None:
        detail["policy"] = sidecar.reloader.status.as_dict()
    return not reasons, detail


def identity_view(sidecar: Observed, now: float) -> dict[str, Any]:
    """Our SPIFFE ID, expiry, trust domains with authority fingerprints, and the source's state."""
    store = sidecar.store
    status = store.status(now)
    snapshot = store.latest
    state = status.source
    out: dict[str, Any] = {
        "spiffe_id": status.spiffe_id, "ready": status.ready, "generation": status.generation,
        "seconds_to_expiry": status.seconds_to_expiry, "stale": status.stale,
        "source": {"state": state.state.value, "address": state.source, "last_error": state.last_error,
                   "since": state.since, "attempt": state.attempt},
        "last_rejection": store.last_rejection,
    }
    if snapshot is not None:
        out["not_after"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot.not_after))
        out["trust_domains"] = {td: [hashlib.sha256(der).hexdigest() for der in ders]
                                for td, ders in sorted(snapshot.bundles.der_map().items())}
    return out


def explain(sidecar: Observed, listener: str, peer: str, method: str | None = None,
            path: str | None = None) -> tuple[int, dict[str, Any]]:
    """What the running policy decides for ``peer`` (and a request, with method/path) on ``listener``."""
    from proxy.operations.live import evaluate
    from proxy.policy.evaluate import Decision

    live = sidecar.live  # read once: a reload swaps the listeners and the policy set together
    inbound = live.inbound.get(listener)
    if inbound is None:
        return 404, {"error": f"no inbound listener {listener!r}", "listeners": sorted(live.inbound)}
    try:
        if (method or path) and live.policies is not None:
            from proxy.http.explain import explain_request

            found: object = explain_request(live.policies, inbound.policy, peer, method, path)
        else:
            found = evaluate(live.policies, inbound.policy, peer)
        decision = found
        assert isinstance(decision, Decision)  # a policy set's decision (DecisionLike has no as_dict)
    except SidecarError as exc:
        return 400, {"error": str(exc)}
    return 200, {"listener": listener, **decision.as_dict()}


class _Handler(BaseHTTPRequestHandler):
    server_version = "spiffe-sidecar-admin"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT  # StreamRequestHandler applies it to every read and write of the connection
    sidecar: Observed  # set on the subclass made by open_admin

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        now = time.time()
        sc = self.sidecar
        if url.path == "/live":
            self._send(200, b"live\n", "text/plain")
        elif url.path == "/ready":
            ready, detail = readiness(sc, now)
            self._json(200 if ready else 503, detail)
        elif url.path == "/metrics" and sc.metrics is not None:
            from prometheus_client import CONTENT_TYPE_LATEST

            self._send(200, sc.metrics.render(), CONTENT_TYPE_LATEST)
        elif url.path in ("/config", "/config_dump"):
            self._json(200, sc.config.redacted())
        elif url.path == "/identity":
            self._json(200, identity_view(sc, now))
        elif url.path == "/policy/explain":
            query = parse_qs(url.query)
            listener, peer = query.get("listener", [""])[0], query.get("peer", [""])[0]
            if not listener or not peer:
                self._json(400, {"error": "usage: /policy/explain?listener=NAME&peer=spiffe://..."})
            else:
                method, path = query.get("method", [None])[0], query.get("path", [None])[0]
                self._json(*explain(sc, listener, peer, method, path))
        else:
            self._json(404, {"error": f"no such endpoint {url.path!r}",
                             "endpoints": ["/live", "/ready", "/metrics", "/config", "/identity",
                                           "/policy/explain?listener=&peer="]})

    def _json(self, status: int, body: Any) -> None:
        self._send(status, (json.dumps(body, indent=1, default=str) + "\n").encode(), JSON)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        _log.debug("admin: " + format, *args)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap, a back-off when out of fds, and quiet errors."""

    block_on_close = False  # close() must not wait for a client that holds its connection
    request_queue_size = 128  # socketserver's 5 makes a probe in a burst wait for SYN retries (1 s, 3 s...)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._quiet_until, self._unsaid = 0.0, 0
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in RESOURCE_ERRNOS:
                # The listening socket stays readable: without a pause serve_forever spins.
                self._say_out_of_fds(exc)
                time.sleep(ACCEPT_BACKOFF)
            raise

    def _say_out_of_fds(self, exc: OSError) -> None:
        self._unsaid += 1
        if (now := time.monotonic()) >= self._quiet_until:
            _log.error("admin endpoint: accept failed: %s (%d since the last report); retrying every %gs",
                       exc.strerror, self._unsaid, ACCEPT_BACKOFF)
            self._quiet_until, self._unsaid = now + ACCEPT_ERROR_EVERY, 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            _refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            _log.debug("admin: client %s went away: %r", client_address, exc)
        else:
            _log.warning("admin: request from %s failed: %r", client_address, exc, exc_info=_log.isEnabledFor(
                logging.DEBUG))


class _Server6(_Server):
    address_family = socket.AF_INET6


def _refuse(request: socket.socket) -> None:
    """Over the cap: a short 503 without blocking (a full send buffer just drops it), then close."""
    try:
        request.setblocking(False)
        request.send(_BUSY)
    except OSError:
        pass
    finally:
        request.close()


class AdminServer:
    """A bound admin endpoint; ``start`` serves it on a daemon thread, ``close`` stops it."""

    def __init__(self, sidecar: Observed) -> None:
        admin = sidecar.config.admin
        assert admin is not None
        handler = type("AdminHandler", (_Handler,), {"sidecar": sidecar})
        server_class = _Server6 if ":" in admin.listen.host else _Server
        try:
            self.server = server_class((admin.listen.host, admin.listen.port), handler)
        except OSError as exc:
            raise ListenError("admin", str(admin.listen), exc) from None
        self.address = admin.listen
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="admin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(2.0)
