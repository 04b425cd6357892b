"""WorkloadApiClient against a tiny raw h2 server that misbehaves on purpose.

Whatever the server sends, the client must fail with a GrpcStatusError (which the
sources retry), never with a UnicodeDecodeError or a protobuf DecodeError.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable

import h2.config
import h2.connection
import h2.events
import pytest
import trio

from proxy.identity.client import WorkloadApiClient
from proxy.workload_api.grpc import GrpcStatusError, StatusCode, encode_message

Respond = Callable[[h2.connection.H2Connection, int], None]


def _bad_header(server: h2.connection.H2Connection, sid: int) -> None:
    server.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"x-bad", b"\xff\xfe")])


def _undecodable_message(server: h2.connection.H2Connection, sid: int) -> None:
    server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    server.send_data(sid, encode_message(b"\xff"))
    server.send_headers(sid, [("grpc-status", "0")], end_stream=True)


async def _serve_one(listener: trio.socket.SocketType, respond: Respond) -> None:
    sock, _ = await listener.accept()
    stream = trio.SocketStream(sock)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    await stream.send_all(server.data_to_send())
    try:
        while data := await stream.receive_some(65536):
            for ev in server.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    respond(server, ev.stream_id)
            await stream.send_all(server.data_to_send())
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def _call(respond: Respond, rpc: str) -> GrpcStatusError:
    directory = Path(tempfile.mkdtemp(prefix="rawh2", dir="/tmp"))
    path = directory / "api.sock"
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        raw.bind(str(path))
        raw.listen(1)
        listener = trio.socket.from_stdlib_socket(raw)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_one, listener, respond)
            client = WorkloadApiClient(f"unix://{path}")
            try:
                with trio.fail_after(10):
                    if rpc == "FetchX509SVID":
                        await client.fetch_x509_context(timeout=5)
                    elif rpc == "FetchJWTSVID":
                        await client.fetch_jwt_svid("aud", timeout=5)
                    else:
                        await client.fetch_jwt_bundles(timeout=5)
            except GrpcStatusError as exc:
                return exc
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
        raise AssertionError("the call did not fail")
    finally:
        raw.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("rpc", ["FetchX509SVID", "FetchJWTBundles"])
def test_non_utf8_response_header_fails_the_call_internal(rpc: str) -> None:
    exc = trio.run(_call, _bad_header, rpc)
    assert exc.status is StatusCode.INTERNAL


@pytest.mark.parametrize("rpc", ["FetchX509SVID", "FetchJWTBundles", "FetchJWTSVID"])
def test_undecodable_response_fails_the_call_internal(rpc: str) -> None:
    exc = trio.run(_call, _undecodable_message, rpc)
    assert exc.status is StatusCode.INTERNAL
    assert "undecodable" in exc.message
