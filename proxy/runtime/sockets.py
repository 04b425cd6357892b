"""Socket plumbing shared by both runtime drivers (only 127.0.0.1-style TCP).

Sockets are plain non-blocking ``socket.socket`` objects: the engines work on
their fds, the drivers wait for readiness on them, and this module is the
one place that creates, connects and closes them.
"""

from __future__ import annotations

import errno
import socket
import struct

from proxy.errors import UpstreamError
from proxy.runtime.happy_eyeballs import race_connect
from proxy.runtime.primitives import AddrInfo, Io
from proxy.tls.contract import RelayStatuses


#: IP_TRANSPARENT (linux/in.h, level SOL_IP) and IPV6_TRANSPARENT (linux/in6.h, level SOL_IPV6).
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
_SOL_IP = getattr(socket, "SOL_IP", 0)
_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)


def _transparent_option(family: int) -> tuple[int, int]:
    return (_SOL_IPV6, IPV6_TRANSPARENT) if family == socket.AF_INET6 else (_SOL_IP, IP_TRANSPARENT)


def open_listening_socket(host: str, port: int, *, backlog: int = 1024, transparent: bool = False) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (SO_REUSEADDR so restarts rebind at once).

    ``transparent`` sets IP_TRANSPARENT (IPV6_TRANSPARENT) before bind: TPROXY
    only hands connections to a transparent listener (it drops them
    otherwise), and the flag needs CAP_NET_ADMIN, so a missing capability
    fails here, at start, naming it, rather than as silently dropped SYNs.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if transparent:
            _set_transparent(sock, family)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _set_transparent(sock: socket.socket, family: int) -> None:
    level, option = _transparent_option(family)
    try:
        sock.setsockopt(level, option, 1)
    except PermissionError:
        raise PermissionError(f"cannot set {'IPV6_TRANSPARENT' if family == socket.AF_INET6 else 'IP_TRANSPARENT'} on the"
                              " TPROXY listener: the sidecar needs CAP_NET_ADMIN for interception: tproxy") from None


def is_transparent(sock: socket.socket) -> bool:
    """True when the socket has IP_TRANSPARENT, which an accepted socket inherits from its listener.

    That is how a connection tells it came through TPROXY without the
    caller passing a mode along: its listener had to be transparent.
    """
    level, option = _transparent_option(sock.family)
    try:
        return bool(sock.getsockopt(level, option))
    except OSError:
        return False


#: accept() errors that mean "out of descriptors or memory": back off instead of spinning.
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def accept_ready(listener: socket.socket) -> tuple[socket.socket, str] | None:
    """Accept one pending connection (non-blocking, TCP_NODELAY) and its source address, or None.

    Raises OSError with an errno in RESOURCE_ERRNOS when the process is out
    of resources (the caller backs off, like trio's serve_listeners).
    """
    try:
        conn, peer = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
            return None  # that one client went away; the listener is fine
        raise
    conn.setblocking(False)
    _nodelay(conn)
    return conn, peer[0] if isinstance(peer, tuple) else str(peer)


def numeric_address(host: str, port: int) -> list[AddrInfo] | None:
    """getaddrinfo for an IP literal (never touches DNS, so safe on the loop); None for a name."""
    try:
        return [info for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                    flags=socket.AI_NUMERICHOST)]
    except socket.gaierror:
        return None


async def open_tcp_connection(host: str, port: int, io: Io) -> socket.socket:
    """Connect a non-blocking TCP socket; raises UpstreamError naming the target and every attempt.

    An IP literal is used as is; a name is resolved by the driver's ``io.resolve``,
    which runs getaddrinfo off the event loop: an inline lookup would stall every
    connection of the process for as long as DNS takes to answer. A name with
    several addresses races them (Happy Eyeballs, see happy_eyeballs.py), so an
    address that black-holes SYNs costs 250 ms, not the whole connect deadline.
    """
    try:
        infos = numeric_address(host, port) or await io.resolve(host, port)
    except socket.gaierror as exc:
        raise UpstreamError(f"cannot resolve {host}: {exc.strerror}") from None
    if not infos:
        raise UpstreamError(f"cannot resolve {host}: no address")
    failures: list[str] = []
    sock = await race_connect(infos, io, failures)
    if sock is None:
        raise UpstreamError(f"connect to {host}:{port}: {'; '.join(failures)}")
    _nodelay(sock)
    return sock


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


#: SO_LINGER on, timeout 0: close() sends a TCP RST (and drops unsent bytes) instead of a FIN.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def reset_quietly(sock: socket.socket | None) -> None:
    """Close a socket with a TCP reset: the peer sees ECONNRESET, never an orderly EOF.

    How a close the sidecar forces reaches an app or a TLS peer: a FIN after
    a cut stream would read as a complete one to any protocol that reads to EOF.
    """
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except OSError:
            pass  # already closed or reset by the peer: the close below is all there is
        close_quietly(sock)


def destination_of(sock: socket.socket) -> tuple[str, int]:
    """Where the client meant to go: SO_ORIGINAL_DST after an iptables REDIRECT, getsockname() after TPROXY.

    TPROXY does no NAT: the accepted socket's local address is the original
    destination, and only a transparent listener receives such connections
    (is_transparent). A connection nobody redirected (or in a namespace
    without conntrack) was meant for exactly where it arrived: our own
    listener. Transparent routing then finds no route (inbound) or refuses
    the loop (outbound).
    """
    from proxy.errors import InterceptionError
    from proxy.interception.original_dst import original_destination, tproxy_destination

    if is_transparent(sock):
        return tproxy_destination(sock)
    try:
        return original_destination(sock)
    except InterceptionError:
        host, port = sock.getsockname()[:2]
        return str(host), int(port)


def peek(sock: socket.socket, count: int) -> bytes | None:
    """Up to ``count`` bytes without consuming them; None if none are there yet, b"" at EOF."""
    try:
        return sock.recv(count, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return None


class PlainRelay:
    """The engines' Relay contract for two plaintext sockets (permissive inbound, passthrough).

    "tls" names the peer side here only to share the statuses: bytes move
    between ``peer_fd`` and ``plain_fd`` through one bounded buffer per
    direction, and EOF on one side becomes shutdown(SHUT_WR) on the other.
    """

    def __init__(self, statuses: RelayStatuses, peer: socket.socket, plain: socket.socket, buffer_size: int) -> None:
        s = statuses
        self._codes = (s.WANT_TLS_READ, s.WANT_TLS_WRITE, s.WANT_PLAIN_READ, s.WANT_PLAIN_WRITE, s.EOF)
        self._peer, self._plain = peer, plain
        self._bufs = [bytearray(buffer_size), bytearray(buffer_size)]
        self._spans = [[0, 0, False], [0, 0, False]]  # start, end, eof
        self.bytes_tls_to_plain = 0
        self.bytes_plain_to_tls = 0

    def tls_to_plain(self) -> int:
        tls_read, _, _, plain_write, eof = self._codes
        return self._pump(0, self._peer, self._plain, tls_read, plain_write, eof)

    def plain_to_tls(self) -> int:
        _, tls_write, plain_read, _, eof = self._codes
        return self._pump(1, self._plain, self._peer, plain_read, tls_write, eof)

    def _pump(self, i: int, src: socket.socket, dst: socket.socket, want_read: int, want_write: int, eof: int) -> int:
        buf, span = self._bufs[i], self._spans[i]
        view = memoryview(buf)
        while True:
            if span[0] < span[1]:
                try:
                    sent = dst.send(view[span[0]:span[1]])
                except (BlockingIOError, InterruptedError):
                    return want_write
                span[0] += sent
                self._count(i, sent)
                continue
            if span[2]:
                return eof
            try:
                got = src.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return want_read
            span[0], span[1] = 0, got
            if got == 0:
                span[2] = True
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _count(self, i: int, n: int) -> None:
        if i == 0:
            self.bytes_tls_to_plain += n
        else:
            self.bytes_plain_to_tls += n
