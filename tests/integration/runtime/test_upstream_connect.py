"""Upstream connects race a host's addresses (Happy Eyeballs): a black hole costs one attempt delay, not the deadline.

Real sockets on both runtimes, through the real drivers' Io (``run_until``
with a connect deadline, ``wait_writable``), as runner.py calls
``open_tcp_connection``. The black holes are real: a one-pod network
namespace whose iptables DROP every packet to some addresses, so their SYNs
vanish without an answer, exactly like a dead route. The resolver is the
one stand-in: it returns fixed getaddrinfo results (of IP literals) in a
chosen order, which is what DNS would hand over for a multi-address name.
What the tests read back comes from the kernel: the peer the socket is
connected to, the sockets still trying to connect (``ss``), and how many
packets each DROP rule caught (which attempts were started).
"""

from __future__ import annotations

import asyncio
import socket
import gc
import time
import warnings
from typing import Any, Awaitable, Callable, Iterator

import pytest
import trio
import uvloop

from proxy.errors import UpstreamError
from proxy.runtime.happy_eyeballs import interleave_families
from proxy.runtime.sockets import open_tcp_connection
from proxy.runtime.trio_driver import TrioIo
from proxy.runtime.uvloop_driver import AsyncioIo
from support.combos import RUNTIMES
from support.netns import Pod, PodNetwork, entered, require_netns, sweep_stale

#: The connect deadline; the old one-address-at-a-time connect spent all of it in the first black hole.
DEADLINE = 10.0
HOLE4, HOLE6, HOLE6_B = "10.77.0.2", "fd77::2", "fd77::3"


def _info(host: str, port: int) -> tuple[Any, ...]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0]


def _run(runtime: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """fn(io) on a fresh event loop of ``runtime``, in this thread."""
    if runtime == "trio":
        return trio.run(fn, TrioIo())

    async def main() -> Any:
        return await fn(AsyncioIo(asyncio.get_running_loop()))

    return uvloop.run(main())


class _WithResolver:
    """The driver's real Io, with getaddrinfo replaced by fixed results (the one stand-in)."""

    def __init__(self, io: Any, resolve: Callable[[str, int], Awaitable[list[tuple[Any, ...]]]]) -> None:
        self._io = io
        self.resolve = resolve

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io, name)


def _connect(runtime: str, infos: list[tuple[Any, ...]], port: int, deadline: float = DEADLINE) -> tuple[bool, Any]:
    """(finished before the deadline, the connected peer's address or the UpstreamError)."""

    async def resolve(host: str, p: int) -> list[tuple[Any, ...]]:
        assert (host, p) == ("upstream.test", port)
        return infos

    async def attempt(io: Any) -> tuple[bool, Any]:
        async def connect() -> Any:
            try:
                sock = await open_tcp_connection("upstream.test", port, _WithResolver(io, resolve))
            except UpstreamError as exc:
                return exc
            with sock:
                return sock.getpeername()[:2]

        return await io.run_until(time.time() + deadline, connect)  # type: ignore[no-any-return]

    # An attempt nobody closed would still vanish with its frame, closed by the
    # collector; the ResourceWarning it leaves behind is how we tell.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = _run(runtime, attempt)
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning) and "socket" in str(w.message)]
    assert not leaked, f"connect attempts left for the collector to close: {leaked}"
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    """One pod whose iptables drop every packet to HOLE4, HOLE6 and HOLE6_B."""
    require_netns()
    sweep_stale()
    with PodNetwork(["eyeballs"], subnet=12) as net:
        solo = net["eyeballs"]
        solo.run(["iptables", "-A", "OUTPUT", "-d", HOLE4, "-p", "tcp", "-j", "DROP"])
        for hole in (HOLE6, HOLE6_B):
            solo.run(["ip6tables", "-A", "OUTPUT", "-d", hole, "-p", "tcp", "-j", "DROP"])
        yield solo


@pytest.fixture
def listener(pod: Pod) -> Iterator[socket.socket]:
    """A live upstream on the pod's 127.0.0.1 (the kernel completes handshakes; nobody needs to accept)."""
    with entered(pod.netns):
        srv = socket.socket()
    with srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv


def _syn_sent(pod: Pod) -> str:
    """Sockets of the pod still trying to connect."""
    return pod.run(["ss", "-Htn", "state", "syn-sent"]).stdout.strip()


def _dropped(pod: Pod, tool: str) -> dict[str, int]:
    """Packets each DROP rule of the pod's OUTPUT chain caught, by destination."""
    out = pod.run([tool, "-L", "OUTPUT", "-v", "-x", "-n"]).stdout.splitlines()
    counts: dict[str, int] = {}
    for line in out[2:]:
        fields = line.split()
        if fields and fields[2] == "DROP":
            destination = fields[-1].removesuffix("/32").removesuffix("/128")
            counts[destination] = counts.get(destination, 0) + int(fields[0])
    return counts


def _zero_counters(pod: Pod) -> None:
    pod.run(["iptables", "-Z", "OUTPUT"])
    pod.run(["ip6tables", "-Z", "OUTPUT"])


@pytest.mark.netns
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_black_holed_first_address_hands_over_to_the_next(pod: Pod, listener: socket.socket, runtime: str) -> None:
    port = listener.getsockname()[1]
    with entered(pod.netns):
        finished, peer = _connect(runtime, [_info(HOLE4, port), _info("127.0.0.1", port)], port)
    assert finished, "the connect deadline expired inside the black hole"
    assert peer == ("127.0.0.1", port)
    assert _syn_sent(pod) == "", "the losing attempt must be closed, not left retrying its SYN"


@pytest.mark.netns
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_other_family_is_tried_second(pod: Pod, listener: socket.socket, runtime: str) -> None:
    """Two black-holed IPv6 addresses first in resolver order: IPv4 goes second, the second IPv6 never starts."""
    port = listener.getsockname()[1]
    _zero_counters(pod)
    with entered(pod.netns):
        finished, peer = _connect(runtime, [_info(HOLE6, port), _info(HOLE6_B, port), _info("127.0.0.1", port)], port)
    assert finished and peer == ("127.0.0.1", port)
    dropped = _dropped(pod, "ip6tables")
    assert dropped[HOLE6] >= 1, "the resolver's first choice is tried first"
    assert dropped[HOLE6_B] == 0, "IPv4 should have been tried before the second IPv6 address"
    assert _syn_sent(pod) == ""


@pytest.mark.netns
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_deadline_inside_black_holes_closes_every_attempt(pod: Pod, runtime: str) -> None:
    """Every address black-holed: the deadline ends the race, and no attempt outlives it."""
    port = 80
    with entered(pod.netns):
        finished, result = _connect(runtime, [_info(HOLE4, port), _info(HOLE6, port), _info(HOLE6_B, port)], port,
                                    deadline=1.0)
    assert not finished and result is None
    assert _syn_sent(pod) == ""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_address_refusing_names_each_attempt(runtime: str) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    finished, error = _connect(runtime, [_info("::1", dead), _info("127.0.0.1", dead)], dead)
    assert finished and isinstance(error, UpstreamError)
    assert f"upstream.test:{dead}" in str(error)
    assert "::1: ECONNREFUSED" in str(error) and "127.0.0.1: ECONNREFUSED" in str(error)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_refusing_address_hands_over_to_a_live_one(runtime: str) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        finished, peer = _connect(runtime, [_info("::1", port), _info("127.0.0.1", port)], port)
    assert finished and peer == ("127.0.0.1", port)


def test_families_alternate_starting_with_the_resolvers_first() -> None:
    infos = [_info(h, 1) for h in ("fd77::1", "fd77::2", "fd77::3", "10.0.0.1", "10.0.0.2")]
    assert [i[4][0] for i in interleave_families(infos)] == ["fd77::1", "10.0.0.1", "fd77::2", "10.0.0.2", "fd77::3"]
    assert interleave_families(infos[3:]) == infos[3:]
