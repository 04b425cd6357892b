"""The accept loop both drivers run per listener: admission at accept, one task per connection.

Split from base.py so that the runtime modules import in one direction:
accept -> runner -> base. (base.py held it, and had to import runner
inside the function to start each connection's task.)
"""

from __future__ import annotations

import logging
import socket
import time

from proxy.errors import AdmissionRefusal
from proxy.runtime.base import DataPlane, ListenerPlan
from proxy.runtime.primitives import Io, TaskGroup
from proxy.runtime.runner import run_connection
from proxy.runtime.sockets import RESOURCE_ERRNOS, accept_ready

_log = logging.getLogger("spiffe_sidecar")
#: Back-off when accept() reports resource exhaustion (trio's serve_listeners uses the same).
ACCEPT_BACKOFF = 0.1
#: At most one "accept failed" line per listener this often while the process is out of fds.
ACCEPT_ERROR_EVERY = 10.0
#: At most one "refused at accept" log line per listener per this many seconds.
REFUSAL_LOG_INTERVAL = 10.0


async def serve_listener(io: Io, plane: DataPlane, plan: ListenerPlan, connections: TaskGroup) -> None:
    """Accept connections forever, one task per connection in ``connections``; never returns."""
    fd = plan.sock.fileno()
    quiet_until, unsaid = 0.0, 0  # out of fds lasts: say so once per ACCEPT_ERROR_EVERY, not per back-off
    while True:
        await io.wait_readable(fd)
        try:
            while (accepted := accept_ready(plan.sock)) is not None:
                conn, source = accepted
                if plan.handshake_limits is not None:
                    refusal = plan.pending.enter(source, *plan.handshake_limits())
                    if refusal is not None:
                        _refuse_at_accept(plan, conn, refusal)
                        continue
                plane.active += 1
                plan.active += 1
                plan.accepted += 1
                plane.accepted += 1
                connections.start_soon(run_connection, io, plane, plan, conn, source)
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRNOS:
                raise
            unsaid += 1
            if (now := time.monotonic()) >= quiet_until:
                _log.error("listener %s: accept failed: %s (%d since the last report); retrying every %gs,"
                           " reporting at most every %gs", plan.name, exc.strerror, unsaid, ACCEPT_BACKOFF,
                           ACCEPT_ERROR_EVERY)
                quiet_until, unsaid = now + ACCEPT_ERROR_EVERY, 0
            await io.sleep(ACCEPT_BACKOFF)


def _refuse_at_accept(plan: ListenerPlan, conn: socket.socket, refusal: AdmissionRefusal) -> None:
    """Close a connection over the pending-handshake limits at once: no task, no TLS state, no record.

    Under a flood this runs thousands of times a second, so the refusal is
    counted (a metric) and logged at most once per REFUSAL_LOG_INTERVAL per
    listener, with how many were refused since the last line.
    """
    conn.close()
    key = refusal.value
    plan.refused[key] = plan.refused.get(key, 0) + 1
    plan.refusals_unlogged += 1
    now = time.monotonic()
    if now - plan.refusal_logged_at >= REFUSAL_LOG_INTERVAL:
        _log.warning("listener %s: refused %d connections at accept (%s: %d handshakes pending);"
                     " established connections are unaffected", plan.name, plan.refusals_unlogged, key,
                     plan.pending.total)
        plan.refusals_unlogged = 0
        plan.refusal_logged_at = now
