"""What both runtime drivers share: the I/O primitives they provide, listener plans, the accept loop.

A driver (trio_driver.py, uvloop_driver.py) supplies an ``Io``: readiness
waits on fds, a wall-clock deadline, a sleep, a cancellable task group and a
lock. Everything above that (the accept loop here, the per-connection
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
from types import ModuleType
from typing import Any, AsyncContextManager, Awaitable, Callable, Protocol, TypeVar

from proxy.connection.close import ConnectionRecord
from proxy.connection.machine import ConnectionSpec, Direction
from proxy.runtime.sockets import RESOURCE_ERRNOS, AddrInfo, accept_ready

_log = logging.getLogger("spiffe_sidecar")
#: Back-off when accept() reports resource exhaustion (trio's serve_listeners uses the same).
ACCEPT_BACKOFF = 0.1
#: At most one "accept failed" line per listener this often while the process is out of fds.
ACCEPT_ERROR_EVERY = 10.0
#: How often a drain looks whether the last connection has closed.
DRAIN_POLL = 0.05

T = TypeVar("T")


class TaskGroup(Protocol):
    """A group of child tasks: a trio nursery or an asyncio TaskGroup, behind one face."""

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None: ...

    def cancel(self) -> None: ...


class Event(Protocol):
    """What trio.Event and asyncio.Event have in common."""

    def set(self) -> None: ...

    async def wait(self) -> Any: ...


class Io(Protocol):
    """The primitives a runtime provides; every await of the data path goes through one."""

    async def wait_readable(self, fd: int) -> None: ...

    async def wait_writable(self, fd: int) -> None: ...

    async def run_until(self, deadline: float | None, fn: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run fn until ``deadline`` (Unix seconds); (False, None) if the deadline came first."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def resolve(self, host: str, port: int) -> list[AddrInfo]:
        """getaddrinfo for a stream socket, off the event loop (a slow DNS server must not stall it)."""
        ...

    def open_group(self) -> AsyncContextManager[TaskGroup]: ...

    def new_lock(self) -> AsyncContextManager[Any]: ...

    def new_event(self) -> Event:
        """A one-shot event (trio.Event / asyncio.Event): set() from this loop, wait() in a task."""
        ...

    def notify_closing(self, sock: socket.socket) -> None:
        """Wake any waiter on ``sock`` before it is closed (trio needs it; asyncio removes watchers)."""
        ...


@dataclass(slots=True, kw_only=True)
class ListenerPlan:
    """One bound listener and how its connections are set up.

    ``spec`` and ``context`` are called once per accepted connection: the
    current policy evaluator and the current TLS context (None when no SVID
    is available: the connection is refused, fail closed). Established
    connections keep what they got. ``spec`` receives the connection's
    original destination on a ``transparent`` listener (None otherwise).
    """

    name: str
    direction: Direction
    sock: socket.socket
    spec: Callable[[tuple[str, int] | None], ConnectionSpec]
    context: Callable[[], Any | None]
    session_key: str | None = None
    transparent: bool = False
    active: int = 0
    accepted: int = 0


@dataclass(slots=True, kw_only=True)
class DataPlane:
    """Everything the connections of one sidecar share: engine, limits, counters, record sink."""

    engine: ModuleType
    listeners: list[ListenerPlan]
    buffer_size: int = 65536
    emit: Callable[[ConnectionRecord], None] = field(default=lambda record: print_record(record))
    active: int = 0
    accepted: int = 0
    closed_by_reason: dict[str, int] = field(default_factory=dict)
    #: (listener, seconds) per completed handshake; None when metrics are off (no cost then).
    handshake_observer: Callable[[str, float], None] | None = None
    #: False: relay on the event loop even when the engine has a relay thread (tests, comparisons).
    relay_on_thread: bool = True
    #: The extension's relay thread (runtime/offload.py) while the plane serves; None: relay on the loop.
    relay_thread: Any = None

    def count_close(self, record: ConnectionRecord) -> None:
        """Counters by close reason (issue 5 turns these into metrics)."""
        key = record.close_reason.value
        self.closed_by_reason[key] = self.closed_by_reason.get(key, 0) + 1


def print_record(record: ConnectionRecord) -> None:
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


async def serve_listener(io: Io, plane: DataPlane, plan: ListenerPlan, connections: TaskGroup) -> None:
    """Accept connections forever, one task per connection in ``connections``; never returns."""
    from proxy.runtime.runner import run_connection

    fd = plan.sock.fileno()
    quiet_until, unsaid = 0.0, 0  # out of fds lasts: say so once per ACCEPT_ERROR_EVERY, not per back-off
    while True:
        await io.wait_readable(fd)
        try:
            while (conn := accept_ready(plan.sock)) is not None:
                plane.active += 1
                plan.active += 1
                plan.accepted += 1
                plane.accepted += 1
                connections.start_soon(run_connection, io, plane, plan, conn)
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
