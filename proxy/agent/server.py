"""The embedded agent: the SPIFFE Workload API on a Unix socket (trio).

One task per accepted connection: read the caller's SO_PEERCRED and hold
a pidfd on it before any byte of HTTP/2 (attestation must name the
process that connected, not whoever has its pid later), then pump bytes
through the sans-IO GrpcServerConnection. Each call runs in its own task
under the connection's nursery; a client reset cancels it, a grpc-timeout
bounds it, and a connection that closes cancels them all. Bad bytes end
that connection only: nothing a caller sends can stop the agent.

    config = load_agent_config("examples/agent.yaml")
    async with trio.open_nursery() as n:
        handle = await n.start(serve_agent, config)   # socket is listening now
        ...                                            # n.cancel_scope.cancel() stops it
"""

from __future__ import annotations

import logging
import os
import socket as stdsocket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import trio

from proxy.agent.attest import Attestor, Peer, read_peer
from proxy.agent.config import AgentConfig
from proxy.agent.handlers import METHODS, AgentState, Call
from proxy.agent.issuer import Issuer
from proxy.errors import AttestationError, SidecarError
from proxy.workload_api import grpc_server as gs
from proxy.workload_api.grpc import SECURITY_HEADER, GrpcStatusError, StatusCode

log = logging.getLogger("spiffe_sidecar.agent")
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class AgentHandle:
    """What `nursery.start(serve_agent, ...)` returns.

    Attributes:
        socket_path: where the agent listens.
        endpoint: the same as a SPIFFE_ENDPOINT_SOCKET value (unix:///...).
        state: the agent's live state (issuer, attestor) for in-process tests.
    """

    socket_path: Path
    endpoint: str
    state: AgentState


async def serve_agent(config: AgentConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> NoReturn:
    """Run the agent until cancelled; `task_status.started(AgentHandle)` once listening.

    Raises:
        SidecarError: the socket cannot be bound (another agent listens there...).
    """
    state = AgentState(Issuer(config), Attestor(config.workload_size_limit))
    listener = await open_agent_listener(config.socket_path, config.socket_mode)
    log.info("agent started socket=%s trust_domains=%s entries=%d", config.socket_path,
             ",".join(str(t.trust_domain) for t in config.trust_domains), len(config.entries))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_rotate, state)
            task_status.started(AgentHandle(config.socket_path, f"unix://{config.socket_path}", state))
            await trio.serve_listeners(lambda s: _serve_connection(s, state), [listener])  # type: ignore[arg-type]
    finally:
        _unlink_socket(config.socket_path)
        log.info("agent stopped socket=%s", config.socket_path)
    raise AssertionError("unreachable")  # serve_listeners never returns


async def open_agent_listener(path: Path, mode: int) -> trio.SocketListener:
    """Bind the Unix socket: parent created, a stale socket removed, a live one refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SidecarError(f"cannot listen on {path}: a non-socket file is there")
        if _is_live(path):
            raise SidecarError(f"cannot listen on {path}: another agent is serving it")
        path.unlink()
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, mode)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SidecarError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return trio.SocketListener(sock)


def _is_live(path: Path) -> bool:
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _unlink_socket(path: Path) -> None:
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except OSError:
        pass


async def _rotate(state: AgentState) -> None:
    """Run CA rotation on schedule and wake every stream when bundles change."""
    while True:
        delay = state.issuer.next_event() - time.time()
        await trio.sleep(max(0.05, min(delay, 3600.0)))
        if state.issuer.tick(time.time()):
            state.changes.notify()


async def _serve_connection(stream: trio.SocketStream, state: AgentState) -> None:
    try:
        peer = read_peer(stream.socket)  # type: ignore[arg-type]
    except AttestationError as exc:
        log.warning("refused connection: %s", exc)
        await stream.aclose()
        return
    try:
        await _Connection(stream, state, peer).run()
    except Exception:  # noqa: BLE001 - one connection's failure must never stop the agent
        log.exception("connection from pid=%d ended with an internal error", peer.pid)
    finally:
        peer.close()
        await trio.aclose_forcefully(stream)


class _Connection:
    """Drives one GrpcServerConnection over one socket."""

    def __init__(self, stream: trio.SocketStream, state: AgentState, peer: Peer) -> None:
        self.stream, self.state, self.peer = stream, state, peer
        self.conn = gs.GrpcServerConnection()
        self.lock = trio.Lock()
        self.pending: dict[int, tuple[str, float | None, list[bytes]]] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.done = trio.CancelScope()
        self.wakeup = trio.Event()

    def flush(self) -> None:
        """Ask the writer task to send what the connection has queued.

        Calls never write to the socket themselves: a call cancelled by its
        deadline in the middle of send_all would leave half an HTTP/2 frame
        on the wire and corrupt every other call on the connection.
        """
        self.wakeup.set()

    async def _write(self) -> None:
        async with self.lock:
            data = self.conn.data_to_send()
            if data:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.done.cancel()

    async def _writer(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            await self._write()

    async def run(self) -> None:
        """Serve until the peer closes, breaks HTTP/2, or the agent stops."""
        with self.done:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                await self._pump(nursery)
                nursery.cancel_scope.cancel()

    async def _pump(self, nursery: trio.Nursery) -> None:
        self.flush()
        while True:
            try:
                data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                events = self.conn.receive_data(data)
            except gs.GrpcProtocolError as exc:
                log.info("closing connection pid=%d: HTTP/2 error: %s", self.peer.pid, exc)
                await self._write()  # the GOAWAY naming the error, before we hang up
                return
            for ev in events:
                self._dispatch(ev, nursery)
            self.flush()

    def _dispatch(self, ev: gs.Event, nursery: trio.Nursery) -> None:
        if isinstance(ev, gs.CallStarted):
            self._start(ev)
        elif isinstance(ev, gs.RequestMessage) and ev.stream_id in self.pending:
            messages = self.pending[ev.stream_id][2]
            messages.append(ev.data)
            if len(messages) > 1:  # unary and server-streaming take one; never buffer more
                del self.pending[ev.stream_id]
                self.conn.send_status(ev.stream_id, StatusCode.INVALID_ARGUMENT, "expected one request message")
        elif isinstance(ev, gs.RequestEnded) and ev.stream_id in self.pending:
            method, timeout, messages = self.pending.pop(ev.stream_id)
            if len(messages) != 1:
                self.conn.send_status(ev.stream_id, StatusCode.INVALID_ARGUMENT,
                                      f"expected exactly one request message, got {len(messages)}")
                return
            scope = trio.CancelScope(deadline=trio.current_time() + timeout if timeout is not None else float("inf"))
            self.scopes[ev.stream_id] = scope
            nursery.start_soon(self._run_call, ev.stream_id, method, messages[0], scope)
        elif isinstance(ev, gs.CallCancelled):
            self.pending.pop(ev.stream_id, None)
            cancelled = self.scopes.pop(ev.stream_id, None)
            if cancelled is not None:
                cancelled.cancel()

    def _start(self, ev: gs.CallStarted) -> None:
        if ev.method not in METHODS:
            self.conn.send_status(ev.stream_id, StatusCode.UNIMPLEMENTED, f"unknown method {ev.method}")
            return
        values = [v for k, v in ev.metadata if k == SECURITY_HEADER[0]]
        if values != [SECURITY_HEADER[1]]:
            log.warning("refused call pid=%d method=%s: missing security header", self.peer.pid, ev.method)
            self.conn.send_status(ev.stream_id, StatusCode.INVALID_ARGUMENT,
                                  "security header missing from request (workload.spiffe.io: true)")
            return
        self.pending[ev.stream_id] = (ev.method, ev.timeout, [])

    async def _run_call(self, stream_id: int, method: str, request: bytes, scope: trio.CancelScope) -> None:
        async def send(payload: bytes) -> None:
            live = self.conn.send_message(stream_id, payload)
            self.flush()
            if not live:
                # The stream is gone (e.g. reset here for overflowing its buffer): stop the
                # handler, or a streaming call would keep re-attesting and issuing for nobody.
                self.scopes.pop(stream_id, None)
                scope.cancel()
                await trio.lowlevel.checkpoint()

        status, message = StatusCode.OK, ""
        with scope:
            try:
                await METHODS[method](Call(self.state, self.peer, request, send))
            except GrpcStatusError as exc:
                status, message = exc.status, exc.message
            except Exception as exc:  # noqa: BLE001 - a bug in one call must not end the agent
                log.exception("internal error in %s pid=%d", method, self.peer.pid)
                status, message = StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
        if scope.cancelled_caught:
            if self.scopes.pop(stream_id, None) is None:
                return  # the client cancelled: nothing to answer
            status, message = StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
        self.scopes.pop(stream_id, None)
        self.conn.send_status(stream_id, status, message)
        self.flush()
