"""The relay thread: established mTLS connections relay in the extension, off the event loop.

Why: once a connection is authorized and connected, all that is left is
moving bytes, and doing that from the event loop (a task per direction, a
readiness wait and a wake-up per event) made every request pay for Python
scheduling: 3-4x haproxy's CPU per request and 8x its p99 (bench/RESULTS.md
before this module). The compiled engine's ``RelayHub`` runs the same C
pumps in one GIL-free epoll loop on a thread of its own, the way a C proxy
does; the event loop keeps accept, handshake, policy, connect and the
record, and a connection's task sleeps on one event until the hub hands the
connection back (see proxy/_fastpath_hub.pxi for the threading rules).

The pure-Python engine has no hub and relays on the event loop, as before;
``SPIFFE_SIDECAR_RELAY_THREAD=0`` makes the compiled engine do the same
(for comparison, or to rule the thread out while debugging).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Iterator, Protocol, TypeGuard

from proxy.runtime.primitives import Io
from proxy.tls.contract import Engine, HubEngine, OffloadedRelay, TlsConnection

_log = logging.getLogger("spiffe_sidecar")

#: Set to 0 to relay on the event loop even with the compiled engine.
RELAY_THREAD_ENV = "SPIFFE_SIDECAR_RELAY_THREAD"
#: OffloadedRelay.outcome while the hub still relays (RELAY_RUNNING in the extension).
RELAY_RUNNING_OUTCOME = 0


def relay_thread_enabled(engine: Engine) -> TypeGuard[HubEngine]:
    """True when this engine has a hub and the environment does not turn it off."""
    return isinstance(engine, HubEngine) and os.environ.get(RELAY_THREAD_ENV, "1").strip() not in ("0", "")


class RelayThread:
    """One RelayHub and the thread that runs its loop, for one data plane."""

    def __init__(self, engine: HubEngine, buffer_size: int) -> None:
        self.engine = engine  # its RELAY_* outcome values read the handles the hub hands back
        self.hub = engine.RelayHub(buffer_size)
        self._thread = threading.Thread(target=self.hub.run, name="relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop (every connection was already handed back) and join its thread."""
        self.hub.stop()
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # cannot happen unless the loop is wedged in a syscall
            _log.error("relay thread did not stop within 10 s")

    async def deliver(self, io: Io) -> None:
        """Forever: wake the tasks whose connections the hub handed back, or has news of (a notice)."""
        fd = self.hub.fileno()
        while True:
            await io.wait_readable(fd)
            for handle in self.hub.finished():
                handle.waiter.set()
            for handle in self.hub.noticed():
                handle.waiter.set()

    def hand_over(self, tls: TlsConnection, tls_fd: int, plain_fd: int, *, idle_timeout: float | None,
                  lifetime_deadline: float | None, buffer_size: int | None,
                  reauth_at: float | None = None) -> OffloadedRelay:
        """Give an established connection to the hub; returns its ``OffloadedRelay`` handle."""
        return self.hub.add(tls, tls_fd, plain_fd, idle_timeout or 0.0, lifetime_deadline or 0.0, buffer_size or 0,
                            reauth_at or 0.0)

    def rearm(self, handle: OffloadedRelay, lifetime_deadline: float | None, reauth_at: float | None) -> None:
        """New timers for a connection the hub keeps relaying (after a re-authentication)."""
        self.hub.rearm(handle, lifetime_deadline or 0.0, reauth_at or 0.0)

    async def wait(self, io: Io, handle: OffloadedRelay) -> None:
        """Until the hub hands the connection back or has a notice for it (both are then on the handle).

        A cancellation (a stop) takes the connection back from the hub
        before it propagates, so the caller may close the sockets at once.
        After a notice the connection is still in the hub: call ``wait``
        again, or ``cancel``.
        """
        handle.waiter = waiter = io.new_event()  # before any await: deliver() runs on this same loop
        try:
            await waiter.wait()
        except BaseException:
            self.hub.cancel(handle)
            raise
        if handle.outcome == RELAY_RUNNING_OUTCOME:
            return  # a notice: the hub keeps relaying
        self.hub.cancel(handle)  # a no-op when it ended on its own

    def cancel(self, handle: OffloadedRelay) -> None:
        """Take a connection back from the hub now (a re-authentication refused it)."""
        self.hub.cancel(handle)


class HostsRelayThread(Protocol):
    """What relay_thread_for needs of a data plane (base.DataPlane; named here so base stays above us)."""

    engine: Engine
    buffer_size: int
    relay_on_thread: bool
    relay_thread: RelayThread | None


@contextlib.contextmanager
def relay_thread_for(plane: HostsRelayThread) -> Iterator[RelayThread | None]:
    """Run a relay thread for ``plane`` while the block runs (None when the engine relays on the loop).

    Sets ``plane.relay_thread`` so that connections find it.
    """
    engine = plane.engine
    if not (plane.relay_on_thread and relay_thread_enabled(engine)):
        yield None
        return
    relays = RelayThread(engine, plane.buffer_size)
    relays.start()
    plane.relay_thread = relays
    try:
        yield relays
    finally:
        plane.relay_thread = None
        relays.stop()
