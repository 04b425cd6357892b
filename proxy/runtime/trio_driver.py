"""The trio runtime (default): a nursery per listener, a task per connection.

Deadlines are cancel scopes (``move_on_at``), readiness is
``trio.lowlevel.wait_readable/wait_writable`` on the fd the engine works
on, and a stop is a cancel scope over the accept loops followed by a grace
period for the open connections. Everything the connections do is in
runner.py, shared with the uvloop driver.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import time
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import trio

from proxy.runtime.accept import serve_listener
from proxy.runtime.base import DataPlane, Grace, ListenerPlan, TaskGroup, drained
from proxy.runtime.offload import relay_thread_for
from proxy.runtime.primitives import AddrInfo
from proxy.runtime.served import ServedSidecar

T = TypeVar("T")
_log = logging.getLogger("spiffe_sidecar")


class _TrioGroup:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._nursery.start_soon(fn, *args)

    def cancel(self) -> None:
        self._nursery.cancel_scope.cancel()


class TrioIo:
    """``proxy.runtime.base.Io`` on trio."""

    async def wait_readable(self, fd: int) -> None:
        await trio.lowlevel.wait_readable(fd)

    async def wait_writable(self, fd: int) -> None:
        await trio.lowlevel.wait_writable(fd)

    async def run_until(self, deadline: float | None, fn: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        when = math.inf if deadline is None else trio.current_time() + (deadline - time.time())
        with trio.move_on_at(when) as scope:
            return True, await fn()
        assert scope.cancelled_caught
        return False, None

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def resolve(self, host: str, port: int) -> list[AddrInfo]:
        # trio runs the lookup in a worker thread, cancellable by the connect deadline.
        return list(await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))

    @contextlib.asynccontextmanager
    async def open_group(self) -> AsyncIterator[TaskGroup]:
        async with trio.open_nursery() as nursery:
            yield _TrioGroup(nursery)

    def new_lock(self) -> trio.Lock:
        return trio.Lock()

    def new_event(self) -> trio.Event:
        return trio.Event()

    def notify_closing(self, sock: socket.socket) -> None:
        trio.lowlevel.notify_closing(sock)


async def serve_data_plane(plane: DataPlane, stop: trio.Event, *, grace: Grace) -> None:
    """Serve every listener until ``stop`` is set; then stop accepting and give connections ``grace`` seconds.

    Listener sockets are closed on return (new connections are refused from
    then on); connections still open after the grace period are cancelled
    and still leave their record.
    """
    io = TrioIo()
    with relay_thread_for(plane) as relays:
        async with trio.open_nursery() as background:
            if relays is not None:
                background.start_soon(relays.deliver, io)
            await _serve_listeners(io, plane, stop, grace)
            background.cancel_scope.cancel()


async def _serve_listeners(io: TrioIo, plane: DataPlane, stop: trio.Event, grace: Grace) -> None:
    async with trio.open_nursery() as root:
        # The scopes are made here, before the children start: a stop that is
        # already set must not find an empty list (a CancelScope can be
        # cancelled before it is entered).
        accept_scopes: list[trio.CancelScope] = []

        async def one_listener(plan: ListenerPlan, scope: trio.CancelScope) -> None:
            async with trio.open_nursery() as connections:
                with scope:
                    await serve_listener(io, plane, plan, _TrioGroup(connections))
                plan.sock.close()
                if not await drained(io, plane, grace):
                    connections.cancel_scope.cancel()

        for plan in plane.listeners:
            accept_scopes.append(scope := trio.CancelScope())
            root.start_soon(one_listener, plan, scope)
        await stop.wait()
        for scope in accept_scopes:
            scope.cancel()


async def _handle_signals(sidecar: ServedSidecar, stop: trio.Event, everything: trio.CancelScope) -> None:
    """SIGHUP reloads; the first SIGTERM/SIGINT drains; a second one cancels everything at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if sidecar.reloader is not None:
                    sidecar.reloader.request()
            elif not stop.is_set():
                sidecar.begin_drain()
                stop.set()
            else:
                _log.warning("second %s: closing %d connections now", signal.Signals(signum).name,
                             sidecar.plane.active if sidecar.plane else 0)
                everything.cancel()
                return


def run_sidecar(sidecar: ServedSidecar) -> int:
    """Run a ``proxy.sidecar.Sidecar`` on trio until SIGINT/SIGTERM; returns the exit code."""
    return trio.run(_main, sidecar)


async def _main(sidecar: ServedSidecar) -> int:
    plane = sidecar.open_data_plane()
    stop = trio.Event()
    failed: list[str] = []
    sidecar.store.subscribe(sidecar.log_identity)
    try:
        sidecar.start_operations()
        with trio.CancelScope() as everything:
            async with trio.open_nursery() as root:
                root.start_soon(_handle_signals, sidecar, stop, everything)
                root.start_soon(_run_identity_source, sidecar, stop, failed)
                root.start_soon(_ready_or_stop, sidecar, stop, failed)
                await serve_data_plane(plane, stop, grace=lambda: sidecar.config.drain_timeout)  # read when the drain begins: reloadable
                root.cancel_scope.cancel()
    finally:
        sidecar.stop_operations()
    _log.info("stopped (%d connections served)", plane.accepted)
    return 1 if failed else 0


async def _run_identity_source(sidecar: ServedSidecar, stop: trio.Event, failed: list[str]) -> None:
    """The identity source; a fatal error (e.g. the server says INVALID_ARGUMENT) stops the sidecar with 1."""
    from proxy.errors import SidecarError

    try:
        await sidecar.identity_source()()
    except SidecarError as exc:
        _log.error("identity source failed: %s", exc)
        failed.append(str(exc))
        stop.set()


async def _ready_or_stop(sidecar: ServedSidecar, stop: trio.Event, failed: list[str]) -> None:
    """Log the ready line at the first SVID, or stop with 1 when none came within the bound."""
    from proxy.errors import NoIdentityError
    from proxy.identity.source import wait_for_first_svid

    try:
        _log.info("waiting up to %gs for the first X.509-SVID from %s", sidecar.first_svid_timeout,
                  sidecar.store.state.source or "the identity source")
        await wait_for_first_svid(sidecar.store, sidecar.first_svid_timeout, progress=_log.warning)
    except NoIdentityError as exc:
        _log.error("%s", exc)
        failed.append(str(exc))
        stop.set()
        return
    sidecar.log_ready()
