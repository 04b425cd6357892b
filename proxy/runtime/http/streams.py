"""Byte streams the HTTP layer reads and writes, on the runtime's ``Io``.

``PlainStream`` is a non-blocking socket (the app side, or the app's
connection on an outbound listener). ``TlsStream`` is an established TLS
connection driven through the engine's own ``Relay`` and a socketpair: the
HTTP code writes plaintext into one end and the relay's ``plain_to_tls``
moves it through TLS; ``tls_to_plain`` fills the other way. The relay is
pumped by whoever reads or writes (no background task), so a pooled
connection needs no task of its own between requests, and neither engine
needs a second API for application data. The cost is one extra copy per
chunk through the socketpair: this is the readable reference (issue 13
leaves compiled speed for later).

Waits on one (fd, readable) pair are serialized with a lock per pair: trio
forbids two waiters on one fd, and an HTTP/2 connection reads in one task
while others write.
"""

from __future__ import annotations

import socket
from typing import AsyncContextManager, Protocol

from proxy.runtime.primitives import Io
from proxy.tls.contract import Engine, TlsConnection
from proxy.runtime.sockets import close_quietly

CHUNK = 65536


class ByteStream(Protocol):
    """What the HTTP sessions need from a connection."""

    async def receive(self, max_bytes: int = CHUNK) -> bytes:
        """Up to ``max_bytes``; b"" at the end of the stream."""
        ...

    async def send_all(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _Waits:
    def __init__(self, io: Io) -> None:
        self.io = io
        self.locks: dict[tuple[int, bool], AsyncContextManager[object]] = {}

    async def wait(self, fd: int, readable: bool) -> None:
        lock = self.locks.get((fd, readable))
        if lock is None:
            lock = self.locks[(fd, readable)] = self.io.new_lock()
        async with lock:
            await (self.io.wait_readable(fd) if readable else self.io.wait_writable(fd))


class PlainStream:
    """A connected non-blocking socket. ``close`` closes it (this stream owns it)."""

    def __init__(self, io: Io, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.io, self.sock, self.fd = io, sock, sock.fileno()
        self._waits = _Waits(io)
        self.closed = False

    async def receive(self, max_bytes: int = CHUNK) -> bytes:
        while True:
            try:
                return self.sock.recv(max_bytes)
            except (BlockingIOError, InterruptedError):
                await self._waits.wait(self.fd, True)

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except (BlockingIOError, InterruptedError):
                await self._waits.wait(self.fd, False)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.io.notify_closing(self.sock)
            close_quietly(self.sock)


class TlsStream:
    """An established TLS connection as a byte stream (see the module docstring).

    ``close`` closes the socketpair only: the TLS connection and its socket
    belong to whoever made them (the connection runner, or the pool).
    """

    def __init__(self, io: Io, engine: Engine, tls: TlsConnection, tls_fd: int, buffer_size: int = CHUNK) -> None:
        self.io, self.engine, self.tls_fd = io, engine, tls_fd
        self.inner, self.outer = socket.socketpair()
        for s in (self.inner, self.outer):
            s.setblocking(False)
        self.relay = engine.Relay(tls, self.inner.fileno(), buffer_size)
        self._waits = _Waits(io)
        self._eof = False
        self.closed = False

    async def receive(self, max_bytes: int = CHUNK) -> bytes:
        e = self.engine
        while True:
            try:
                return self.outer.recv(max_bytes)
            except (BlockingIOError, InterruptedError):
                pass
            if self._eof:
                return b""
            before = self.relay.bytes_tls_to_plain
            status = self.relay.tls_to_plain()
            if status == e.EOF:
                self._eof = True
            elif self.relay.bytes_tls_to_plain != before:
                continue  # bytes arrived in the socketpair: read them before waiting for more
            elif status == e.WANT_TLS_READ:
                await self._waits.wait(self.tls_fd, True)
            elif status == e.WANT_TLS_WRITE:
                await self._waits.wait(self.tls_fd, False)
            # WANT_PLAIN_WRITE: the socketpair is full of what we have not read yet: read it.

    async def send_all(self, data: bytes) -> None:
        e = self.engine
        view = memoryview(data)
        while True:
            while view:
                try:
                    view = view[self.outer.send(view):]
                except (BlockingIOError, InterruptedError):
                    break
            status = self.relay.plain_to_tls()
            if status == e.WANT_PLAIN_READ:
                if not view:
                    return  # everything written went through TLS
            elif status == e.WANT_TLS_WRITE:
                await self._waits.wait(self.tls_fd, False)
            elif status == e.WANT_TLS_READ:
                await self._waits.wait(self.tls_fd, True)
            elif status == e.EOF:
                raise BrokenPipeError("TLS connection closed for writing")

    def poll_idle(self) -> bytes | None:
        """Without waiting: what an idle connection has received (b"" once closed), or None for nothing.

        Reads through TLS, so post-handshake records (session tickets) are
        consumed rather than mistaken for data; a TLS or socket error reads
        as closed.
        """
        try:
            for _ in range(2):
                try:
                    return self.outer.recv(CHUNK)
                except (BlockingIOError, InterruptedError):
                    pass
                if self._eof:
                    return b""
                if self.relay.tls_to_plain() == self.engine.EOF:
                    self._eof = True
            return None
        except Exception:  # noqa: BLE001 - any failure (TLS or socket) means it is not reusable
            return b""

    async def finish(self) -> None:
        """Send close_notify after what was written (half-close our side)."""
        try:
            self.outer.shutdown(socket.SHUT_WR)
        except OSError:
            return
        e = self.engine
        for _ in range(1000):
            status = self.relay.plain_to_tls()
            if status == e.EOF:
                return
            if status == e.WANT_TLS_WRITE:
                await self._waits.wait(self.tls_fd, False)
            elif status == e.WANT_TLS_READ:
                await self._waits.wait(self.tls_fd, True)
            elif status == e.WANT_PLAIN_READ:
                await self._waits.wait(self.inner.fileno(), True)

    @property
    def bytes_in(self) -> int:
        return int(self.relay.bytes_tls_to_plain)

    @property
    def bytes_out(self) -> int:
        return int(self.relay.bytes_plain_to_tls)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for s in (self.inner, self.outer):
                self.io.notify_closing(s)
                close_quietly(s)
