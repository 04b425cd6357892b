"""The I/O primitives a runtime driver provides: the one face the data path awaits through.

Split from base.py so that the modules below the accept loop (sockets,
happy_eyeballs, offload, runner) can name these types without importing
base.py, which imports them: the runtime package has no import circle.
"""

from __future__ import annotations

import socket
from typing import AsyncContextManager, Awaitable, Callable, Coroutine, Protocol, TypeVar

#: One getaddrinfo result: (family, type, proto, canonname, sockaddr), as typeshed types socket.getaddrinfo.
SockAddr = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, SockAddr]

T = TypeVar("T")


class TaskGroup(Protocol):
    """A group of child tasks: a trio nursery or an asyncio TaskGroup, behind one face."""

    def start_soon(self, fn: Callable[..., Coroutine[object, object, object]], *args: object) -> None: ...

    def cancel(self) -> None: ...


class Event(Protocol):
    """What trio.Event and asyncio.Event have in common."""

    def set(self) -> None: ...

    async def wait(self) -> object: ...


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

    def new_lock(self) -> AsyncContextManager[object]: ...

    def new_event(self) -> Event:
        """A one-shot event (trio.Event / asyncio.Event): set() from this loop, wait() in a task."""
        ...

    def notify_closing(self, sock: socket.socket) -> None:
        """Wake any waiter on ``sock`` before it is closed (trio needs it; asyncio removes watchers)."""
        ...
