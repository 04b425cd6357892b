"""Socket plumbing shared by both runtime drivers (only 127.0.0.1-style TCP).

Sockets are plain non-blocking ``socket.socket`` objects: the engines work on
their fds, the drivers wait for readiness on them, and this module is the
one place that creates, connects and closes them.
"""

from __future__ import annotations

import errno
import socket
from typing import Awaitable, Callable

from proxy.errors import UpstreamError

#: Waits until an fd is writable (a driver's readiness primitive).
WaitFd = Callable[[int], Awaitable[None]]


def open_listening_socket(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (SO_REUSEADDR so restarts rebind at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


#: accept() errors that mean "out of descriptors or memory": back off instead of spinning.
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def accept_ready(listener: socket.socket) -> socket.socket | None:
    """Accept one pending connection (non-blocking, TCP_NODELAY), or None if none is pending.

    Raises OSError with an errno in RESOURCE_ERRNOS when the process is out
    of resources (the caller backs off, like trio's serve_listeners).
    """
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
            return None  # that one client went away; the listener is fine
        raise
    conn.setblocking(False)
    _nodelay(conn)
    return conn


async def open_tcp_connection(host: str, port: int, wait_writable: WaitFd) -> socket.socket:
    """Connect a non-blocking TCP socket; raises UpstreamError naming the target."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UpstreamError(f"cannot resolve {host}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        code = sock.connect_ex(addr)
        if code in (errno.EINPROGRESS, errno.EWOULDBLOCK):
            await wait_writable(sock.fileno())
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code != 0:
            raise UpstreamError(f"connect to {host}:{port}: {errno.errorcode.get(code, code)} ({code})")
        _nodelay(sock)
        return sock
    except BaseException:
        sock.close()
        raise


def _nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def close_quietly(sock: socket.socket | None) -> None:
    """Close a socket, ignoring errors (the peer may already be gone)."""
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
