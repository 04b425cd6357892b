"""Racing connect attempts to a host's addresses: Happy Eyeballs (RFC 8305), simplified as trio's open_tcp_stream.

Why race: addresses are tried in the resolver's order, and one that
black-holes SYNs (a dead IPv6 route, a firewalled replica) would otherwise
hold the connection until the whole connect deadline is gone. So the
addresses are interleaved by family (RFC 8305 section 4), each attempt gets
``ATTEMPT_DELAY`` to connect before the next one starts (section 5), a
refusal starts the next one at once, the first connected socket wins and
every other attempt is closed.

How it waits. The one primitive the runtimes hand to this code is
``wait_writable(fd)``: one fd, no timeout. A race needs "any of these
sockets, or the next attempt's start time". The kernel does that wait: a
helper thread poll(2)s the racing sockets with that timeout, then makes an
eventfd writable, and the loop waits for that eventfd with
``wait_writable``, so trio and asyncio share this code unchanged. The
eventfd starts with its counter at the maximum (not writable); the helper
drains it. The thread only exists while a race is undecided: one address,
an IP literal, or an attempt that settles at once (any loopback address)
never starts one. (With the runtime's own sleep and task group this would
be tasks instead of a thread; the caller's interface does not carry them.)
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections import deque
from typing import Any, Awaitable, Callable, Sequence

#: How long an attempt may stay unanswered before the next one starts (RFC 8305's recommended 250 ms).
ATTEMPT_DELAY = 0.25

#: An eventfd whose counter holds this refuses writes: not writable until someone reads it.
_EVENTFD_FULL = 0xFFFFFFFFFFFFFFFE
_DONE_EVENTS = select.POLLOUT | select.POLLERR | select.POLLHUP


def interleave_families(infos: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """getaddrinfo results reordered to alternate families, the resolver's first family first.

    Order within a family is kept: the resolver (RFC 6724) ranked them.
    """
    by_family: dict[int, deque[tuple[Any, ...]]] = {}
    for info in infos:
        by_family.setdefault(info[0], deque()).append(info)
    queues = list(by_family.values())
    out: list[tuple[Any, ...]] = []
    while queues:
        for queue in queues:
            out.append(queue.popleft())
        queues = [q for q in queues if q]
    return out


async def race_connect(infos: Sequence[tuple[Any, ...]], wait_writable: Callable[[int], Awaitable[None]],
                       failures: list[str]) -> socket.socket | None:
    """The first socket to connect to one of ``infos``; None (reasons in ``failures``) if every one fails.

    Every other attempt is closed before this returns or raises (also when
    the caller's deadline cancels it): the caller owns only what it gets.
    """
    pending = deque(interleave_families(infos))
    racing: list[tuple[socket.socket, Any]] = []
    winner: socket.socket | None = None
    next_start = 0.0
    try:
        while True:
            if pending and (not racing or time.monotonic() >= next_start):
                attempt = _start(pending.popleft(), failures)
                if attempt is not None:
                    racing.append(attempt)
                # An attempt that failed at once hands over at once (RFC 8305 section 5).
                next_start = time.monotonic() + ATTEMPT_DELAY if attempt is not None else 0.0
                continue
            winner, failed = _settle(racing, failures)
            if winner is not None:
                return winner
            if failed:
                next_start = 0.0  # a failure hands over at once, too
            if not racing and not pending:
                return None
            if not racing or (pending and time.monotonic() >= next_start):
                continue  # the next attempt is due
            timeout = max(0.0, next_start - time.monotonic()) if pending else None
            await _wait_any_writable([s.fileno() for s, _ in racing], timeout, wait_writable)
    finally:
        for sock, _ in racing:
            if sock is not winner:
                sock.close()


def _start(info: tuple[Any, ...], failures: list[str]) -> tuple[socket.socket, Any] | None:
    """Begin one non-blocking connect; None (reason recorded) when it fails at once."""
    family, _, _, _, addr = info
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:  # e.g. EAFNOSUPPORT: a host without IPv6 can still use the IPv4 addresses
        failures.append(_failure(addr, exc.errno or 0))
        return None
    try:
        sock.setblocking(False)
        code = sock.connect_ex(addr)
    except BaseException:
        sock.close()
        raise
    if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
        failures.append(_failure(addr, code))
        sock.close()
        return None
    return sock, addr


def _settle(racing: list[tuple[socket.socket, Any]], failures: list[str]) -> tuple[socket.socket | None, bool]:
    """Without waiting: (a connected socket or None, whether an attempt failed); finished attempts leave ``racing``."""
    poller = select.poll()
    for sock, _ in racing:
        poller.register(sock.fileno(), select.POLLOUT)
    finished = {fd for fd, events in poller.poll(0) if events & _DONE_EVENTS}
    failed = False
    for entry in [e for e in racing if e[0].fileno() in finished]:
        sock, addr = entry
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        racing.remove(entry)
        if code == 0:
            return sock, failed
        failures.append(_failure(addr, code))
        sock.close()
        failed = True
    return None, failed


def _failure(addr: Any, code: int) -> str:
    return f"{addr[0]}: {errno.errorcode.get(code, code)} ({code})"


async def _wait_any_writable(fds: list[int], timeout: float | None,
                             wait_writable: Callable[[int], Awaitable[None]]) -> None:
    """Return once one of ``fds`` is writable (connected or failed) or ``timeout`` seconds have passed."""
    if len(fds) == 1 and timeout is None:
        await wait_writable(fds[0])  # nothing to race: the runtime's own wait does it
        return
    waker = _PollWaker(fds, timeout)
    try:
        await wait_writable(waker.ready_fd)
    finally:
        waker.leave()


class _PollWaker:
    """A helper thread's poll(2) over some fds, delivered to the loop as a writable eventfd.

    Two eventfds: ``ready_fd`` (what the loop waits on) and ``_stop_fd`` (how a
    waiter that leaves early, say cancelled by its deadline, wakes the thread
    at once instead of letting it poll on). Whoever of the two finishes last
    closes both, decided under one lock, so neither side ever touches an fd
    number the other has closed and the system may have reused.
    """

    def __init__(self, fds: list[int], timeout: float | None) -> None:
        self.ready_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        os.eventfd_write(self.ready_fd, _EVENTFD_FULL)
        self._lock = threading.Lock()
        self._thread_done = False
        self._waiter_gone = False
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLOUT)
        poller.register(self._stop_fd, select.POLLIN)
        # Rounded up: a thread that woke a hair early would only be started again.
        timeout_ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        try:
            threading.Thread(target=self._watch, args=(poller, timeout_ms), name="happy-eyeballs", daemon=True).start()
        except BaseException:  # no thread (RuntimeError when the process has too many): nobody else will close them
            self._close()
            raise

    def _watch(self, poller: select.poll, timeout_ms: int | None) -> None:
        try:
            poller.poll(timeout_ms)
        finally:
            with self._lock:
                self._thread_done = True
                if self._waiter_gone:
                    self._close()
                else:
                    os.eventfd_read(self.ready_fd)  # counter back to 0: writable, the loop wakes

    def leave(self) -> None:
        """The waiter is done with this waker (woken, cancelled or failed)."""
        with self._lock:
            self._waiter_gone = True
            if self._thread_done:
                self._close()
            else:
                os.eventfd_write(self._stop_fd, 1)

    def _close(self) -> None:
        os.close(self.ready_fd)
        os.close(self._stop_fd)
