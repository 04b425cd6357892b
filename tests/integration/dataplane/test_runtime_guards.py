"""The runtimes' own guards: a broken connection setup, a TimeoutError that is not the deadline, an early stop."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import Any

import pytest

from proxy.connection.machine import ConnectionSpec, Direction
from proxy.runtime.base import DataPlane, ListenerPlan
from proxy.runtime.sockets import open_listening_socket
from support.net import EchoServer, recv_all
from support.combos import RUNTIMES
from support.sidecar import Plane


def roundtrip(port: int, payload: bytes = b"ping", timeout: float = 5) -> bytes:
    """Send, half-close, read to EOF; a refused, reset or unanswered connection reads as b""."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return recv_all(sock)
        except OSError:
            return b""


def test_a_connection_whose_setup_raises_costs_that_connection_not_the_data_plane(plane: Plane) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port)
    plane.add("other", Direction.INBOUND, echo.port)
    original = plane.plans["out"].spec
    calls = []

    def spec_raising_once(dst: tuple[str, int] | None) -> ConnectionSpec:
        calls.append(dst)
        if len(calls) == 1:
            raise RuntimeError("a bug in building the spec")
        return original(dst)

    plane.plans["out"].spec = spec_raising_once
    plane.start()
    assert roundtrip(plane.port("out")) == b""  # closed, not left hanging
    assert roundtrip(plane.port("out")) == b"ping"  # the listener (and "in" behind it) still serve
    assert roundtrip(plane.port("other"), b"not a ClientHello") == b""  # refused by closing, with a record:
    assert plane.wait_record(lambda r: r.listener == "other")  # the other listener still serves too
    echo.close()


@pytest.mark.parametrize("exc", [TimeoutError("fn's own timeout"),
                                 OSError(errno.ETIMEDOUT, "Connection timed out")],
                         ids=["TimeoutError", "ETIMEDOUT"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_until_lets_a_timeout_error_of_fn_through(runtime: str, exc: OSError) -> None:
    async def fn() -> None:
        raise exc

    async def amain() -> Any:
        from proxy.runtime.uvloop_driver import AsyncioIo

        return await AsyncioIo(asyncio.get_running_loop()).run_until(time.time() + 30, fn)

    async def tmain() -> Any:
        from proxy.runtime.trio_driver import TrioIo

        return await TrioIo().run_until(time.time() + 30, fn)

    with pytest.raises(TimeoutError) as caught:
        if runtime == "uvloop":
            import uvloop

            uvloop.run(amain())
        else:
            import trio

            trio.run(tmain)
    assert caught.value is exc


def test_run_until_still_reports_the_deadline_on_uvloop() -> None:
    import uvloop

    from proxy.runtime.uvloop_driver import AsyncioIo

    async def amain() -> Any:
        return await AsyncioIo(asyncio.get_running_loop()).run_until(time.time() + 0.05, lambda: asyncio.sleep(5))

    assert uvloop.run(amain()) == (False, None)


def _idle_plane() -> DataPlane:
    spec = ConnectionSpec(listener="x", direction=Direction.INBOUND, upstream_host="127.0.0.1", upstream_port=1,
                          authorize=lambda peer: None)
    plans = [ListenerPlan(name=f"l{i}", direction=Direction.INBOUND, sock=open_listening_socket("127.0.0.1", 0),
                          spec=lambda dst: spec, context=lambda: None) for i in range(2)]
    return DataPlane(engine=None, listeners=plans, emit=lambda record: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_serve_data_plane_returns_when_stop_is_set_before_it_starts(runtime: str) -> None:
    # trio may run the parent before or after the listener tasks: repeat so an order-dependent hang shows.
    for _ in range(20):
        plane = _idle_plane()
        start = time.monotonic()
        if runtime == "trio":
            import trio

            from proxy.runtime.trio_driver import serve_data_plane

            async def tmain() -> bool:
                stop = trio.Event()
                stop.set()
                with trio.move_on_after(3) as bound:
                    await serve_data_plane(plane, stop, grace=0.5)
                return not bound.cancelled_caught

            returned = trio.run(tmain)
        else:
            import uvloop

            from proxy.runtime.uvloop_driver import serve_data_plane as serve_uv

            async def amain() -> bool:
                stop = asyncio.Event()
                stop.set()
                try:
                    async with asyncio.timeout(3):
                        await serve_uv(plane, stop, grace=0.5)
                except TimeoutError:
                    return False
                return True

            returned = uvloop.run(amain())
        assert returned and time.monotonic() - start < 3, "serve_data_plane did not return after an early stop"
        assert all(plan.sock.fileno() == -1 for plan in plane.listeners)  # listeners closed on return
