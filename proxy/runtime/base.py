"""What both runtime drivers share: listener plans, the data plane, the drain.

A driver (trio_driver.py, uvloop_driver.py) supplies an ``Io`` (primitives.py): readiness
waits on fds, a wall-clock deadline, a sleep, a cancellable task group and a
lock. Everything above that (the accept loop in accept.py, the per-connection
action executor in runner.py) is written once against ``Io``, so the two
runtimes cannot drift apart in behaviour, only in their event loop. The
decisions themselves live in proxy.connection; nothing here decides.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from proxy.connection.close import ConnectionRecord
from proxy.connection.machine import ConnectionSpec, Direction
from proxy.connection.pending import PendingHandshakes
from proxy.connection.reauth import ReauthRecord
from proxy.connection.resumption import ResumptionBackoff
from proxy.errors import HandshakeFailure
from proxy.runtime.primitives import Event, Io, TaskGroup
from proxy.tls.contract import Engine

if TYPE_CHECKING:
    from proxy.identity.swap import ContextPair
    from proxy.runtime.http.pool import UpstreamPool
    from proxy.runtime.http.records import HttpMetrics, RequestRecord
    from proxy.runtime.offload import RelayThread

_log = logging.getLogger("spiffe_sidecar")
#: How often a drain looks whether the last connection has closed.
DRAIN_POLL = 0.05
__all__ = ["DRAIN_POLL", "DataPlane", "Event", "Grace", "Io", "ListenerPlan", "TaskGroup", "drained",
           "print_record"]


@dataclass(slots=True, kw_only=True)
class ListenerPlan:
    """One bound listener and how its connections are set up.

    ``spec`` and ``context`` are called once per accepted connection: the
    current policy evaluator and the current TLS context pair (None when no
    SVID is available: the connection is refused, fail closed; the runner
    takes the pair's server or client side by ``direction``). Established
    connections keep what they got. ``spec`` receives the connection's
    original destination on a ``transparent`` listener (None otherwise).
    """

    name: str
    direction: Direction
    sock: socket.socket
    spec: Callable[[tuple[str, int] | None], ConnectionSpec]
    context: Callable[[], ContextPair | None]
    session_key: str | None = None
    transparent: bool = False
    active: int = 0
    accepted: int = 0
    #: Inbound only: the listener's current (max_pending_handshakes, max_pending_handshakes_per_source);
    #: None admits every connection to a handshake (outbound: the app's own connections).
    handshake_limits: Callable[[], tuple[int, int]] | None = None
    pending: PendingHandshakes = field(default_factory=PendingHandshakes)
    #: Connections closed at accept, by AdmissionRefusal value (read at scrape time).
    refused: dict[str, int] = field(default_factory=dict)
    refusals_unlogged: int = 0
    refusal_logged_at: float = 0.0


@dataclass(slots=True, kw_only=True)
class DataPlane:
    """Everything the connections of one sidecar share: engine, limits, counters, record sink."""

    engine: Engine
    listeners: list[ListenerPlan]
    buffer_size: int = 65536
    emit: Callable[[ConnectionRecord], None] = field(default=lambda record: print_record(record))
    #: Where re-authentication records go (issue 11.2): the access log and a metric, beside ``emit``.
    emit_reauth: Callable[[ReauthRecord], None] = field(default=lambda record: print_record(record))
    active: int = 0
    accepted: int = 0
    #: (listener, seconds) per completed handshake; None when metrics are off (no cost then).
    handshake_observer: Callable[[str, float], None] | None = None
    #: False: relay on the event loop even when the engine has a relay thread (tests, comparisons).
    relay_on_thread: bool = True
    #: The extension's relay thread (runtime/offload.py) while the plane serves; None: relay on the loop.
    relay_thread: RelayThread | None = None
    #: Upstreams that refused a resumed session, and until when none is offered to them (issue 10.3).
    resumption: ResumptionBackoff = field(default_factory=ResumptionBackoff)
    #: (listener, failure reason) -> full-handshake retries after an upstream refused a session.
    resumption_fallbacks: dict[tuple[str, HandshakeFailure], int] = field(default_factory=dict)
    #: Where HTTP listeners' request records go (proxy.runtime.http.records); None: JSON on stdout.
    emit_request: Callable[[RequestRecord], None] | None = None
    #: HTTP request metrics (proxy.runtime.http.records.HttpMetrics) when metrics are on.
    http_metrics: HttpMetrics | None = None
    #: Outbound HTTP listeners' connection pools, by (listener, host, port) (proxy.runtime.http.pool).
    http_pools: dict[tuple[str, str, int], UpstreamPool] = field(default_factory=dict)

    def count_resumption_fallback(self, listener: str, reason: HandshakeFailure) -> None:
        """One full-handshake retry after ``listener``'s upstream refused a session (read at scrape time)."""
        key = (listener, reason)
        self.resumption_fallbacks[key] = self.resumption_fallbacks.get(key, 0) + 1


def print_record(record: ConnectionRecord | ReauthRecord) -> None:
    """The default record sink: one JSON line on stdout."""
    sys.stdout.write(record.to_json() + "\n")
    sys.stdout.flush()


#: A drain grace in seconds, or where to read it when the drain begins (the reloadable config).
Grace = float | Callable[[], float]


async def drained(io: Io, plane: DataPlane, grace: Grace) -> bool:
    """Wait until the plane has no open connection, at most ``grace`` seconds; False if some remain.

    Both drivers drain with it after they stopped accepting; what remains
    afterwards is theirs to cancel. A callable grace is read now, when the
    drain begins, so a reloaded ``drain_timeout`` applies to the next drain.
    """
    if callable(grace):
        grace = grace()
    async def no_connections_left() -> None:
        while plane.active > 0:
            await io.sleep(DRAIN_POLL)

    finished, _ = await io.run_until(time.time() + grace, no_connections_left)
    return finished
