"""The uvloop (asyncio) runtime: the same executor as trio, on readiness callbacks.

Readiness is ``loop.add_reader/add_writer`` resolving a future (asyncio keeps
one callback per fd and kind, and the executor already makes the two relay
directions take turns on a shared fd); deadlines are ``asyncio.timeout_at``;
the per-connection task group is ``asyncio.TaskGroup``. The Workload API
client is trio code: the sidecar runs it in its own thread with its own
``trio.run``, and the identity store's subscribers reach this loop with
``call_soon_threadsafe`` (see proxy/sidecar.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Coroutine, TypeVar

from proxy.runtime.accept import serve_listener
from proxy.runtime.base import DataPlane, Grace, ListenerPlan, TaskGroup, drained
from proxy.runtime.offload import relay_thread_for
from proxy.runtime.primitives import AddrInfo
from proxy.runtime.served import ServedSidecar
from proxy.runtime.threads import TrioThread

if TYPE_CHECKING:
    from proxy.identity.snapshot import IdentitySnapshot

T = TypeVar("T")
#: Seconds between "still waiting for the first SVID" lines (as the trio driver's wait_for_first_svid).
PROGRESS_EVERY = 5.0
_log = logging.getLogger("spiffe_sidecar")


class _AsyncioGroup:
    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._tasks: set[asyncio.Task[object]] = set()

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        task: asyncio.Task[object] = self._group.create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class AsyncioIo:
    """``proxy.runtime.base.Io`` on asyncio (uvloop's loop in production)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def _wait(self, fd: int, add: Callable[..., None], remove: Callable[[int], Any]) -> None:
        future: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not future.done():
                future.set_result(None)

        add(fd, ready)
        try:
            await future
        finally:
            remove(fd)

    async def wait_readable(self, fd: int) -> None:
        await self._wait(fd, self._loop.add_reader, self._loop.remove_reader)

    async def wait_writable(self, fd: int) -> None:
        await self._wait(fd, self._loop.add_writer, self._loop.remove_writer)

    async def run_until(self, deadline: float | None, fn: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        when = None if deadline is None else self._loop.time() + (deadline - time.time())
        try:
            async with asyncio.timeout_at(when) as cm:
                return True, await fn()
        except TimeoutError:
            # Only the deadline is "not finished": fn's own TimeoutError (an
            # OSError with ETIMEDOUT is one) is fn's outcome and goes through.
            if cm.expired():
                return False, None
            raise

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def resolve(self, host: str, port: int) -> list[AddrInfo]:
        # The loop's resolver runs getaddrinfo in its executor, off the loop.
        return list(await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))

    @contextlib.asynccontextmanager
    async def open_group(self) -> AsyncIterator[TaskGroup]:
        async with asyncio.TaskGroup() as group:
            yield _AsyncioGroup(group)

    def new_lock(self) -> asyncio.Lock:
        return asyncio.Lock()

    def new_event(self) -> asyncio.Event:
        return asyncio.Event()

    def notify_closing(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)


async def serve_data_plane(plane: DataPlane, stop: asyncio.Event, *, grace: Grace) -> None:
    """Serve every listener until ``stop`` is set; then stop accepting and give connections ``grace`` seconds.

    Same contract as the trio driver's function of the same name.
    """
    io = AsyncioIo(asyncio.get_running_loop())

    async def one_listener(plan: ListenerPlan, accepting: list[asyncio.Task[Any]]) -> None:
        async with asyncio.TaskGroup() as tg:
            connections = _AsyncioGroup(tg)
            accept = asyncio.ensure_future(serve_listener(io, plane, plan, connections))
            accepting.append(accept)
            if stop.is_set():
                # The parent cancels what is in ``accepting`` once ``stop`` is set; a
                # stop set before this task ran found nothing to cancel (the parent
                # does not even yield when stop is already set), so cancel it here.
                accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accept
            io.notify_closing(plan.sock)
            plan.sock.close()
            if not await drained(io, plane, grace):
                connections.cancel()

    accepting: list[asyncio.Task[Any]] = []
    with relay_thread_for(plane) as relays:
        deliver = asyncio.ensure_future(relays.deliver(io)) if relays is not None else None
        try:
            async with asyncio.TaskGroup() as root:
                for plan in plane.listeners:
                    root.create_task(one_listener(plan, accepting))
                await stop.wait()
                for task in accepting:
                    task.cancel()
        finally:
            if deliver is not None:
                deliver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await deliver


def run_sidecar(sidecar: ServedSidecar) -> int:
    """Run a ``proxy.sidecar.Sidecar`` on uvloop until SIGINT/SIGTERM; returns the exit code."""
    import uvloop

    return int(uvloop.run(_main(sidecar)))


def _follow_identity(sidecar: ServedSidecar, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """Log identity changes on the loop; the returned event is set by the first SVID."""
    have_identity = asyncio.Event()

    def on_loop(snapshot: IdentitySnapshot | None) -> None:
        sidecar.log_identity(snapshot)
        if snapshot is not None:
            have_identity.set()

    def hop(snapshot: IdentitySnapshot | None) -> None:
        loop.call_soon_threadsafe(on_loop, snapshot)

    # Subscribers run in the identity thread: hop to the loop before touching loop state.
    sidecar.store.subscribe(hop)
    return have_identity


async def _main(sidecar: ServedSidecar) -> int:
    loop = asyncio.get_running_loop()
    plane = sidecar.open_data_plane()
    stop = asyncio.Event()
    try:
        sidecar.start_operations()
        _handle_signals(sidecar, loop, stop, asyncio.current_task())
        return await _serve(sidecar, loop, plane, stop)
    finally:
        sidecar.stop_operations()


def _handle_signals(sidecar: ServedSidecar, loop: asyncio.AbstractEventLoop, stop: asyncio.Event,
                    main: asyncio.Task[Any] | None) -> None:
    """SIGHUP reloads; the first SIGTERM/SIGINT drains; a second one cancels everything at once."""
    def on_stop(sig: signal.Signals) -> None:
        if not stop.is_set():
            sidecar.begin_drain()
            stop.set()
        elif main is not None:
            _log.warning("second %s: closing %d connections now", sig.name,
                         sidecar.plane.active if sidecar.plane else 0)
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop, sig)
    def on_reload() -> None:
        if sidecar.reloader is not None:
            sidecar.reloader.request()

    loop.add_signal_handler(signal.SIGHUP, on_reload)


async def _serve(sidecar: ServedSidecar, loop: asyncio.AbstractEventLoop, plane: DataPlane, stop: asyncio.Event) -> int:
    have_identity = _follow_identity(sidecar, loop)
    failed: list[str] = []
    source = TrioThread(lambda: _run_identity_source(sidecar, loop, stop, failed), name="identity-source")
    source.start()
    ready = asyncio.ensure_future(_ready_or_stop(sidecar, have_identity, stop, failed))
    try:
        await serve_data_plane(plane, stop, grace=lambda: sidecar.config.drain_timeout)  # read when the drain begins: reloadable
    except asyncio.CancelledError:
        pass  # a second SIGTERM/SIGINT: connections were cancelled and left their records
    finally:
        ready.cancel()
        source.stop()
    _log.info("stopped (%d connections served)", plane.accepted)
    return 1 if failed else 0


async def _run_identity_source(sidecar: ServedSidecar, loop: asyncio.AbstractEventLoop, stop: asyncio.Event,
                               failed: list[str]) -> None:
    """Runs in the identity thread (trio); a fatal error stops the sidecar with 1 via the loop."""
    from proxy.errors import SidecarError

    try:
        await sidecar.identity_source()()
    except SidecarError as exc:
        _log.error("identity source failed: %s", exc)
        failed.append(str(exc))
        loop.call_soon_threadsafe(stop.set)


async def _ready_or_stop(sidecar: ServedSidecar, have_identity: asyncio.Event, stop: asyncio.Event, failed: list[str]) -> None:
    """Log the ready line at the first SVID, or stop with 1 when none came within the bound."""
    from proxy.identity.diagnose import first_svid_diagnostic, waiting_note

    timeout = sidecar.first_svid_timeout
    _log.info("waiting up to %gs for the first X.509-SVID from %s", timeout,
              sidecar.store.state.source or "the identity source")
    start = time.monotonic()
    while not have_identity.is_set():
        waited = time.monotonic() - start
        if waited >= timeout:
            _log.error("%s", first_svid_diagnostic(sidecar.store, timeout))
            failed.append("no first SVID")
            stop.set()
            return
        if waited >= PROGRESS_EVERY:  # never silent: what the source is doing, every few seconds
            _log.warning("%s", waiting_note(sidecar.store, waited, timeout))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(have_identity.wait(), min(PROGRESS_EVERY, timeout - waited))
    sidecar.log_ready()
