"""The sans-IO gRPC server, driven by h2's own client: bytes in, events out."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from proxy.workload_api.grpc import StatusCode, encode_message, status_from_trailers
from proxy.workload_api.grpc_server import (
    CallCancelled, CallStarted, GrpcProtocolError, GrpcServerConnection, RequestEnded, RequestMessage)

PATH = "/SpiffeWorkloadAPI/FetchX509SVID"


def _client(window: int | None = None) -> h2.connection.H2Connection:
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    if window is not None:
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    return c


def _pump(client, server) -> tuple[list, list]:
    """Move bytes both ways until quiet; return (server events, client events)."""
    s_events, c_events = [], []
    for _ in range(10):
        out = client.data_to_send()
        if out:
            s_events += server.receive_data(out)
        back = server.data_to_send()
        if back:
            c_events += client.receive_data(back)
        if not out and not back:
            break
    return s_events, c_events


def _request(client, *, path=PATH, extra=(), body=b"", end=True, ctype="application/grpc") -> int:
    sid = client.get_next_available_stream_id()
    headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
               ("content-type", ctype), ("te", "trailers"), *extra]
    client.send_headers(sid, headers, end_stream=not body and end)
    if body:
        client.send_data(sid, encode_message(body), end_stream=end)
    return sid


def _headers(c_events, kind=h2.events.ResponseReceived):
    return [dict(e.headers) for e in c_events if isinstance(e, kind)]


def test_call_reports_method_metadata_message_and_half_close() -> None:
    client, server = _client(), GrpcServerConnection()
    sid = _request(client, extra=[("workload.spiffe.io", "true"), ("grpc-timeout", "250m")], body=b"\x0a\x01x")
    s_events, _ = _pump(client, server)
    started = [e for e in s_events if isinstance(e, CallStarted)]
    assert started == [CallStarted(sid, PATH, (("workload.spiffe.io", "true"),), 0.25)]
    assert RequestMessage(sid, b"\x0a\x01x") in s_events and RequestEnded(sid) in s_events


def test_stream_sends_headers_messages_then_trailers() -> None:
    client, server = _client(), GrpcServerConnection()
    sid = _request(client, body=b"req")
    _pump(client, server)
    server.send_message(sid, b"one")
    server.send_message(sid, b"two")
    server.send_status(sid, StatusCode.OK)
    _, c_events = _pump(client, server)
    assert _headers(c_events)[0][":status"] == "200"
    data = b"".join(e.data for e in c_events if isinstance(e, h2.events.DataReceived))
    assert data == encode_message(b"one") + encode_message(b"two")
    trailers = _headers(c_events, h2.events.TrailersReceived)[0]
    assert status_from_trailers(trailers) == (StatusCode.OK, "")
    assert any(isinstance(e, h2.events.StreamEnded) for e in c_events)
    assert server.open_calls() == 0


def test_error_before_any_message_is_a_trailers_only_response_with_encoded_message() -> None:
    client, server = _client(), GrpcServerConnection()
    sid = _request(client, body=b"")
    _pump(client, server)
    server.send_status(sid, StatusCode.PERMISSION_DENIED, "no entry; observed: unix:uid:0 100%")
    _, c_events = _pump(client, server)
    (headers,) = _headers(c_events)
    assert headers[":status"] == "200" and "%25" in headers["grpc-message"]
    assert status_from_trailers(headers) == (StatusCode.PERMISSION_DENIED, "no entry; observed: unix:uid:0 100%")
    assert not _headers(c_events, h2.events.TrailersReceived)


def test_non_grpc_request_and_bad_timeout_are_refused_without_a_call() -> None:
    client, server = _client(), GrpcServerConnection()
    _request(client, ctype="text/plain")
    _request(client, extra=[("grpc-timeout", "soon")])
    s_events, c_events = _pump(client, server)
    assert not [e for e in s_events if isinstance(e, CallStarted)]
    codes = [status_from_trailers(h)[0] for h in _headers(c_events)]
    assert codes == [StatusCode.INVALID_ARGUMENT, StatusCode.INVALID_ARGUMENT]


def test_big_message_respects_the_peer_window_and_resumes_on_window_update() -> None:
    client, server = _client(window=1000), GrpcServerConnection()
    sid = _request(client, body=b"r")
    _pump(client, server)
    payload = bytes(range(256)) * 40  # 10 KiB > 1000-byte window
    server.send_message(sid, payload)
    server.send_status(sid, StatusCode.OK)
    received = bytearray()
    trailers = []
    for _ in range(50):
        _, c_events = _pump(client, server)
        for e in c_events:
            if isinstance(e, h2.events.DataReceived):
                assert len(e.data) <= 1000
                received += e.data
                client.acknowledge_received_data(e.flow_controlled_length, sid)
        trailers += _headers(c_events, h2.events.TrailersReceived)
        if trailers:
            break
    assert bytes(received) == encode_message(payload)
    assert status_from_trailers(trailers[0])[0] == StatusCode.OK


def test_client_reset_cancels_the_call_and_later_sends_are_ignored() -> None:
    client, server = _client(), GrpcServerConnection()
    sid = _request(client, body=b"r")
    _pump(client, server)
    client.reset_stream(sid)
    s_events, _ = _pump(client, server)
    assert CallCancelled(sid) in s_events
    server.send_message(sid, b"late")
    server.send_status(sid, StatusCode.OK)
    assert server.data_to_send() == b""


def test_compressed_message_is_refused() -> None:
    client, server = _client(), GrpcServerConnection()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "x"),
                              ("content-type", "application/grpc")])
    client.send_data(sid, b"\x01\x00\x00\x00\x01z", end_stream=True)
    s_events, c_events = _pump(client, server)
    assert CallCancelled(sid) in s_events
    assert status_from_trailers(_headers(c_events)[0])[0] == StatusCode.UNIMPLEMENTED


def test_bytes_that_are_not_http2_raise_protocol_error() -> None:
    server = GrpcServerConnection()
    with pytest.raises(GrpcProtocolError):
        server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_mutated_client_bytes_only_ever_raise_protocol_error() -> None:
    import random

    client = _client()
    _request(client, extra=[("workload.spiffe.io", "true"), ("grpc-timeout", "1S")], body=b"\x0a\x03abc")
    valid = client.data_to_send()
    rng = random.Random(1234)
    for _ in range(1500):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(24, len(data))] = rng.randrange(256)  # past the preface: frames and HPACK
        cut = rng.randint(1, len(data))
        server = GrpcServerConnection()
        try:
            for part in (bytes(data[:cut]), bytes(data[cut:])):
                for ev in server.receive_data(part):
                    if isinstance(ev, CallStarted):
                        server.send_message(ev.stream_id, b"answer")
                        server.send_status(ev.stream_id, StatusCode.OK)
                server.data_to_send()
        except GrpcProtocolError:
            pass


def test_send_reports_whether_the_call_is_still_live() -> None:
    client, server = _client(window=16), GrpcServerConnection(max_buffered=64)
    sid = _request(client, body=b"r")
    _pump(client, server)
    assert server.send_message(sid, b"x" * 8) is True
    # The client does not read: the buffer overflows, the server resets the stream itself.
    assert server.send_message(sid, b"y" * 100) is False
    assert server.open_calls() == 0
    assert server.send_message(sid, b"late") is False
    assert server.send_status(sid, StatusCode.OK) is False
    other = _request(client, body=b"r")
    _pump(client, server)
    assert server.send_status(other, StatusCode.OK) is True
    assert server.send_status(other, StatusCode.OK) is False
