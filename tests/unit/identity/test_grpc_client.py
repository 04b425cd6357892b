"""The sans-IO gRPC client against a raw h2 server: bytes in, events out.

The server side here is plain h2 so each test can write exactly the
frames it needs (trailers-only answers, HTTP errors, GOAWAY, tiny windows).
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from proxy.workload_api.grpc import GrpcStatusError, StatusCode, encode_message
from proxy.workload_api.grpc_client import CallEnded, ConnectionEnded, GrpcClientConnection, MessageReceived, ResponseStarted

METHOD = "/SpiffeWorkloadAPI/FetchX509SVID"


class Peer:
    """A raw h2 server wired to a GrpcClientConnection through memory."""

    def __init__(self) -> None:
        self.client = GrpcClientConnection()
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.server.initiate_connection()
        self.requests: dict[int, dict[str, str]] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: set[int] = set()

    def pump(self) -> list[object]:
        events: list[object] = []
        for _ in range(10):
            to_server = self.client.data_to_send()
            for ev in self.server.receive_data(to_server) if to_server else []:
                if isinstance(ev, h2.events.RequestReceived):
                    self.requests[ev.stream_id] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    self.bodies[ev.stream_id] = self.bodies.get(ev.stream_id, b"") + ev.data
                    self.server.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.ended.add(ev.stream_id)
            to_client = self.server.data_to_send()
            if to_client:
                events += self.client.receive_data(to_client)
            if not to_server and not to_client:
                break
        return events

    def respond(self, sid: int, *messages: bytes, status: int = 0, message: str = "") -> list[object]:
        self.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        for m in messages:
            self.server.send_data(sid, encode_message(m))
        trailers = [("grpc-status", str(status))] + ([("grpc-message", message)] if message else [])
        self.server.send_headers(sid, trailers, end_stream=True)
        return self.pump()


def test_request_carries_security_header_timeout_and_grpc_headers() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"\x01\x02", timeout=2.5)
    peer.pump()
    headers = peer.requests[sid]
    assert headers[":path"] == METHOD and headers[":method"] == "POST"
    assert headers["workload.spiffe.io"] == "true"
    assert headers["te"] == "trailers" and headers["content-type"] == "application/grpc"
    assert headers["grpc-timeout"] == "2500m" and headers[":authority"] == "localhost"
    assert peer.bodies[sid] == encode_message(b"\x01\x02") and sid in peer.ended


def test_streamed_messages_then_ok_trailers() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    events = peer.respond(sid, b"one", b"two")
    assert isinstance(events[0], ResponseStarted)
    assert [e.payload for e in events if isinstance(e, MessageReceived)] == [b"one", b"two"]
    end = events[-1]
    assert isinstance(end, CallEnded) and end.status == StatusCode.OK and end.error is None


def test_trailers_only_error_ends_the_call_with_its_status() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    peer.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                   ("grpc-status", "7"), ("grpc-message", "no identity issued%3A uid 1000")],
                             end_stream=True)
    end = [e for e in peer.pump() if isinstance(e, CallEnded)][0]
    assert end.status == StatusCode.PERMISSION_DENIED
    assert end.error is not None and end.error.message == "no identity issued: uid 1000"


def test_http_error_without_grpc_status_maps_to_grpc_code() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    peer.server.send_headers(sid, [(":status", "503")], end_stream=True)
    end = [e for e in peer.pump() if isinstance(e, CallEnded)][0]
    assert end.status == StatusCode.UNAVAILABLE


def test_missing_grpc_status_is_unknown() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    peer.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    peer.server.send_data(sid, b"", end_stream=True)
    end = [e for e in peer.pump() if isinstance(e, CallEnded)][0]
    assert end.status == StatusCode.UNKNOWN


def test_message_split_across_frames_is_reassembled() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    framed = encode_message(b"x" * 1000)
    peer.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    peer.server.send_data(sid, framed[:7])
    assert not [e for e in peer.pump() if isinstance(e, MessageReceived)]
    peer.server.send_data(sid, framed[7:])
    assert [e.payload for e in peer.pump() if isinstance(e, MessageReceived)] == [b"x" * 1000]


def test_large_stream_is_acknowledged_so_the_server_never_stalls() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    peer.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    got = 0
    for _ in range(40):  # 40 x 16 KiB: far beyond the 64 KiB initial window
        peer.server.send_data(sid, encode_message(b"y" * 16000))
        got += len([e for e in peer.pump() if isinstance(e, MessageReceived)])
    assert got == 40


def test_request_larger_than_peer_window_is_sent_as_window_opens() -> None:
    peer = Peer()
    big = b"t" * 200_000
    sid = peer.client.start_call("/SpiffeWorkloadAPI/ValidateJWTSVID", big)
    peer.pump()
    assert peer.bodies[sid] == encode_message(big) and sid in peer.ended


def test_request_resumes_when_only_a_settings_frame_opens_the_stream_window() -> None:
    # h2 grows every stream's window on a SETTINGS INITIAL_WINDOW_SIZE increase
    # without a WindowUpdated event; a client waiting for one would stall forever.
    peer = Peer()
    big = b"t" * 100_000  # beyond the 65,535-byte default windows
    sid = peer.client.start_call("/SpiffeWorkloadAPI/ValidateJWTSVID", big)
    received = bytearray()

    def deliver() -> None:
        for ev in peer.server.receive_data(peer.client.data_to_send()):
            if isinstance(ev, h2.events.DataReceived):
                received.extend(ev.data)  # never acknowledged: no stream WINDOW_UPDATE
            elif isinstance(ev, h2.events.StreamEnded):
                peer.ended.add(ev.stream_id)
        peer.client.receive_data(peer.server.data_to_send())

    deliver()
    assert 0 < len(received) < len(encode_message(big))
    peer.server.increment_flow_control_window(1 << 20)  # the connection's window only
    deliver()
    peer.server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    deliver()
    deliver()
    assert bytes(received) == encode_message(big) and sid in peer.ended


def test_goaway_ends_calls_the_server_never_started() -> None:
    peer = Peer()
    first = peer.client.start_call(METHOD, b"")
    peer.pump()
    second = peer.client.start_call(METHOD, b"")
    peer.server.close_connection(last_stream_id=first)
    events = peer.client.receive_data(peer.server.data_to_send())  # GOAWAY overtakes the new stream
    assert any(isinstance(e, ConnectionEnded) for e in events)
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert [e.stream_id for e in ended] == [second] and ended[0].status == StatusCode.UNAVAILABLE


def test_connection_lost_ends_open_calls_unavailable() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    ended = peer.client.connection_lost()
    assert [(e.stream_id, e.status) for e in ended] == [(sid, StatusCode.UNAVAILABLE)]


def test_compressed_message_ends_call_unimplemented() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    peer.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    peer.server.send_data(sid, b"\x01\x00\x00\x00\x01z")
    end = [e for e in peer.pump() if isinstance(e, CallEnded)][0]
    assert end.status == StatusCode.UNIMPLEMENTED


def test_two_calls_share_one_connection() -> None:
    peer = Peer()
    a = peer.client.start_call(METHOD, b"")
    b = peer.client.start_call("/SpiffeWorkloadAPI/FetchJWTSVID", b"")
    peer.pump()
    events = peer.respond(b, b"jwt") + peer.respond(a, b"x509")
    assert [(e.stream_id, e.payload) for e in events if isinstance(e, MessageReceived)] == [(b, b"jwt"), (a, b"x509")]


def test_non_utf8_response_header_is_an_internal_status_not_a_unicode_error() -> None:
    peer = Peer()
    sid = peer.client.start_call(METHOD, b"")
    peer.pump()
    peer.server.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc"),
                                   (b"x-bad", b"\xff\xfe")])
    with pytest.raises(GrpcStatusError) as info:
        peer.pump()
    assert info.value.status is StatusCode.INTERNAL
