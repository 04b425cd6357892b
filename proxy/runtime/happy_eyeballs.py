"""Racing connect attempts to a host's addresses: Happy Eyeballs (RFC 8305), simplified as trio's open_tcp_stream.

Why race: addresses are tried in the resolver's order, and one that
black-holes SYNs (a dead IPv6 route, a firewalled replica) would otherwise
hold the connection until the whole connect deadline is gone. So the
addresses are interleaved by family (RFC 8305 section 4), each attempt gets
``ATTEMPT_DELAY`` to connect before the next one starts (section 5), a
refusal starts the next one at once, the first connected socket wins and
every other attempt is closed.

How it waits. With the runtime's own primitives (``Io``): one task per
racing socket waits for it to be writable in a task group, the first to wake
cancels the others, and ``run_until`` bounds the wait by the next attempt's
start time. A single attempt with no next one is a plain ``wait_writable``.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from proxy.runtime.primitives import AddrInfo, Io, SockAddr

#: How long an attempt may stay unanswered before the next one starts (RFC 8305's recommended 250 ms).
ATTEMPT_DELAY = 0.25

_DONE_EVENTS = select.POLLOUT | select.POLLERR | select.POLLHUP


def interleave_families(infos: Sequence[AddrInfo]) -> list[AddrInfo]:
    """getaddrinfo results reordered to alternate families, the resolver's first family first.

    Order within a family is kept: the resolver (RFC 6724) ranked them.
    """
    by_family: dict[int, deque[AddrInfo]] = {}
    for info in infos:
        by_family.setdefault(info[0], deque()).append(info)
    queues = list(by_family.values())
    out: list[AddrInfo] = []
    while queues:
        for queue in queues:
            out.append(queue.popleft())
        queues = [q for q in queues if q]
    return out


async def race_connect(infos: Sequence[AddrInfo], io: Io, failures: list[str]) -> socket.socket | None:
    """The first socket to connect to one of ``infos``; None (reasons in ``failures``) if every one fails.

    Every other attempt is closed before this returns or raises (also when
    the caller's deadline cancels it): the caller owns only what it gets.
    """
    pending = deque(interleave_families(infos))
    racing: list[tuple[socket.socket, SockAddr]] = []
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
            await _wait_any_writable([s.fileno() for s, _ in racing], timeout, io)
    finally:
        for sock, _ in racing:
            if sock is not winner:
                sock.close()


def _start(info: AddrInfo, failures: list[str]) -> tuple[socket.socket, SockAddr] | None:
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


def _settle(racing: list[tuple[socket.socket, SockAddr]], failures: list[str]) -> tuple[socket.socket | None, bool]:
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


def _failure(addr: SockAddr, code: int) -> str:
    return f"{addr[0]}: {errno.errorcode.get(code, code)} ({code})"


async def _wait_any_writable(fds: list[int], timeout: float | None, io: Io) -> None:
    """Return once one of ``fds`` is writable (connected or failed) or ``timeout`` seconds have passed."""
    if len(fds) == 1 and timeout is None:
        await io.wait_writable(fds[0])  # nothing to race: the runtime's own wait does it
        return

    async def first_writable() -> None:
        async with io.open_group() as group:
            async def watch(fd: int) -> None:
                await io.wait_writable(fd)
                group.cancel()  # the others: one writable socket is all _settle needs to look

            for fd in fds:
                group.start_soon(watch, fd)

    await io.run_until(None if timeout is None else time.time() + timeout, first_writable)
