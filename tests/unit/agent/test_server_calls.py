"""The agent's per-connection call runner (proxy/agent/server.py), with a fake connection."""

from __future__ import annotations

import trio

from proxy.agent import server
from proxy.agent.attest import Peer
from proxy.agent.handlers import Call
from proxy.workload_api.grpc import StatusCode


class _GoneConnection:
    """A GrpcServerConnection whose stream was reset by the server itself (buffer overflow)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.statuses: list[StatusCode] = []

    def send_message(self, stream_id: int, payload: bytes) -> bool:
        self.messages.append(payload)
        return False

    def send_status(self, stream_id: int, status: StatusCode, message: str = "") -> bool:
        self.statuses.append(status)
        return False


def test_handler_stops_when_its_stream_is_gone(monkeypatch) -> None:
    sends = []

    async def streaming(call: Call) -> None:
        for i in range(5):  # a streaming handler: re-attest + issue at every renewal
            sends.append(i)
            await call.send(b"svid")
            await trio.sleep(0)

    monkeypatch.setitem(server.METHODS, "/test/Stream", streaming)
    conn = server._Connection(None, None, Peer(1, 0, 0, -1))  # type: ignore[arg-type]
    fake = _GoneConnection()
    conn.conn = fake  # type: ignore[assignment]

    async def main() -> None:
        scope = trio.CancelScope()
        conn.scopes[1] = scope
        with trio.fail_after(5):
            await conn._run_call(1, "/test/Stream", b"", scope)

    trio.run(main)
    assert sends == [0]
    assert fake.messages == [b"svid"]
    assert fake.statuses == []
    assert conn.scopes == {}
