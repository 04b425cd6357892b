"""The gRPC framing shared by the agent and the client (proxy/workload_api/grpc.py)."""

from __future__ import annotations

import pytest

from proxy.workload_api import workload_pb2
from proxy.workload_api.grpc import (
    GrpcStatusError,
    MessageDecoder,
    StatusCode,
    decode_grpc_message,
    encode_grpc_message,
    encode_message,
    format_timeout,
    parse_timeout,
    status_from_trailers,
    status_headers,
)


def test_messages_split_across_arbitrary_chunks_decode_in_order() -> None:
    msgs = [workload_pb2.JWTSVIDRequest(audience=[f"aud-{i}" * i]).SerializeToString() for i in range(1, 6)]
    wire = b"".join(encode_message(m) for m in msgs)
    decoder = MessageDecoder()
    out: list[bytes] = []
    for i in range(0, len(wire), 3):
        out += decoder.feed(wire[i:i + 3])
    assert out == msgs
    assert decoder.pending == 0


def test_empty_message_is_a_five_byte_frame() -> None:
    assert encode_message(b"") == b"\x00\x00\x00\x00\x00"
    assert MessageDecoder().feed(b"\x00\x00\x00\x00\x00") == [b""]


def test_compressed_flag_is_refused_as_unimplemented() -> None:
    with pytest.raises(GrpcStatusError) as info:
        MessageDecoder().feed(b"\x01\x00\x00\x00\x01x")
    assert info.value.status is StatusCode.UNIMPLEMENTED


def test_oversized_length_is_refused_before_buffering_it() -> None:
    with pytest.raises(GrpcStatusError) as info:
        MessageDecoder(max_message=10).feed(b"\x00\x00\x00\x00\x0b")
    assert info.value.status is StatusCode.RESOURCE_EXHAUSTED


def test_grpc_message_percent_encoding_round_trips_non_ascii_and_percent() -> None:
    text = "no entry: observed unix:uid:1000 100% \u00e9\n"
    encoded = encode_grpc_message(text)
    assert "\n" not in encoded and "%25" in encoded
    assert decode_grpc_message(encoded) == text


@pytest.mark.parametrize(("value", "seconds"), [("100m", 0.1), ("5S", 5.0), ("2M", 120.0), ("1H", 3600.0), ("7u", 7e-6)])
def test_grpc_timeout_parses_every_unit(value: str, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5", "S", "-1S", "1.5S", "123456789S", "5x", "²S"])
def test_malformed_grpc_timeout_is_invalid_argument(value: str) -> None:
    with pytest.raises(GrpcStatusError) as info:
        parse_timeout(value)
    assert info.value.status is StatusCode.INVALID_ARGUMENT


def test_format_timeout_never_sends_zero() -> None:
    assert format_timeout(0.0) == "1m"
    assert parse_timeout(format_timeout(2.5)) == pytest.approx(2.5)


def test_trailers_without_status_are_unknown_and_codes_map() -> None:
    assert status_from_trailers({})[0] is StatusCode.UNKNOWN
    assert status_from_trailers({"grpc-status": "7", "grpc-message": "a%20b"}) == (StatusCode.PERMISSION_DENIED, "a b")
    assert status_from_trailers({"grpc-status": "99"})[0] is StatusCode.UNKNOWN


def test_status_headers_read_back_as_the_same_status_and_message() -> None:
    assert status_headers(StatusCode.OK) == [("grpc-status", "0")]
    sent = dict(status_headers(StatusCode.PERMISSION_DENIED, "no entry: 100% ünïcode"))
    assert status_from_trailers(sent) == (StatusCode.PERMISSION_DENIED, "no entry: 100% ünïcode")


def test_workload_messages_coexist_with_the_spiffe_librarys_registration() -> None:
    """Both define X509SVIDRequest etc. without a package; ours lives in a private pool."""
    pytest.importorskip("spiffe", reason="interop library is a test dependency")
    from spiffe._proto import workload_pb2 as theirs  # noqa: F401 - registering is the point

    resp = workload_pb2.X509SVIDResponse(federated_bundles={"spiffe://b.test": b"\x30\x00"})
    resp.svids.add(spiffe_id="spiffe://a.test/w", hint="h")
    again = theirs.X509SVIDResponse.FromString(resp.SerializeToString())
    assert again.svids[0].spiffe_id == "spiffe://a.test/w" and again.svids[0].hint == "h"
