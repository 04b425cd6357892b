"""What the agent refuses, and that refusing never breaks it.

grpcio is used directly (generic calls, no SPIFFE library) so a test can
leave out the security header or send what a well-behaved client would not.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from proxy.workload_api import workload_pb2 as pb

X509 = "/SpiffeWorkloadAPI/FetchX509SVID"
HEADER = [("workload.spiffe.io", "true")]


def _stream(endpoint: str, method: str, request: Any, response: Any, metadata: list | None, timeout: float = 5):
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_stream(method, request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=response.FromString)
        return next(iter(call(request, metadata=metadata, timeout=timeout)))


def _unary(endpoint: str, method: str, request: Any, response: Any, metadata: list | None = HEADER):
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response.FromString)
        return call(request, metadata=metadata, timeout=5)


@pytest.fixture(scope="module")
def agent():
    """One agent for the module: refusals must not change its state, and starting one costs a second."""
    import shutil
    import tempfile

    from support.agent import AgentProcess, agent_yaml
    directory = Path(tempfile.mkdtemp(prefix="agt-", dir="/tmp"))
    cfg = agent_yaml(directory, entries=[("spiffe://example.org/me", [f"unix:uid:{os.getuid()}"])])
    with AgentProcess(cfg, directory / "agent.sock") as running:
        yield running
    shutil.rmtree(directory, ignore_errors=True)


def test_call_without_security_header_gets_invalid_argument(agent) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stream(agent.endpoint, X509, pb.X509SVIDRequest(), pb.X509SVIDResponse, metadata=None)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "security header" in err.value.details()


def test_security_header_with_another_value_gets_invalid_argument(agent) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stream(agent.endpoint, X509, pb.X509SVIDRequest(), pb.X509SVIDResponse,
                metadata=[("workload.spiffe.io", "yes")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_method_gets_unimplemented(agent) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stream(agent.endpoint, "/SpiffeWorkloadAPI/FetchWITSVID", pb.X509SVIDRequest(), pb.X509SVIDResponse,
                metadata=HEADER)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_workload_without_matching_entry_gets_permission_denied_naming_its_selectors(agent_factory) -> None:
    agent = agent_factory([("spiffe://example.org/other", ["unix:uid:4242"])])
    with pytest.raises(grpc.RpcError) as err:
        _stream(agent.endpoint, X509, pb.X509SVIDRequest(), pb.X509SVIDResponse, metadata=HEADER)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    exe = os.path.realpath(sys.executable)
    digest = hashlib.sha256(Path(exe).read_bytes()).hexdigest()
    details = err.value.details()
    assert "no registration entry matches this workload; observed selectors:" in details
    for selector in (f"unix:uid:{os.getuid()}", f"unix:gid:{os.getgid()}", f"unix:path:{exe}", f"unix:sha256:{digest}"):
        assert selector in details
    assert "denied pid=" in agent.log()


def test_jwt_svid_request_without_audience_gets_invalid_argument(agent) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _unary(agent.endpoint, "/SpiffeWorkloadAPI/FetchJWTSVID", pb.JWTSVIDRequest(), pb.JWTSVIDResponse)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_jwt_svid_for_an_id_the_workload_does_not_hold_gets_permission_denied(agent) -> None:
    req = pb.JWTSVIDRequest(audience=["x"], spiffe_id="spiffe://example.org/not-me")
    with pytest.raises(grpc.RpcError) as err:
        _unary(agent.endpoint, "/SpiffeWorkloadAPI/FetchJWTSVID", req, pb.JWTSVIDResponse)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_validate_returns_claims_and_rejects_tampered_or_misaddressed_tokens(agent) -> None:
    got = _unary(agent.endpoint, "/SpiffeWorkloadAPI/FetchJWTSVID", pb.JWTSVIDRequest(audience=["svc-b"]),
                 pb.JWTSVIDResponse)
    token = got.svids[0].svid
    ok = _unary(agent.endpoint, "/SpiffeWorkloadAPI/ValidateJWTSVID",
                pb.ValidateJWTSVIDRequest(audience="svc-b", svid=token), pb.ValidateJWTSVIDResponse)
    assert ok.spiffe_id == "spiffe://example.org/me"
    assert ok.claims["sub"] == "spiffe://example.org/me" and ok.claims["aud"] == "svc-b"
    head, body, sig = token.split(".")
    tampered = f"{head}.{body}.{sig[:-4]}AAAA"
    for req in (pb.ValidateJWTSVIDRequest(audience="svc-b", svid=tampered),
                pb.ValidateJWTSVIDRequest(audience="someone-else", svid=token),
                pb.ValidateJWTSVIDRequest(audience="svc-b", svid="not a jwt"),
                pb.ValidateJWTSVIDRequest(audience="", svid=token),
                pb.ValidateJWTSVIDRequest(audience="svc-b", svid="")):
        with pytest.raises(grpc.RpcError) as err:
            _unary(agent.endpoint, "/SpiffeWorkloadAPI/ValidateJWTSVID", req, pb.ValidateJWTSVIDResponse)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req


def _send_raw(path: Path, payload: bytes) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(str(path))
        s.sendall(payload)
        try:
            s.recv(65536)
        except OSError:
            pass
    finally:
        s.close()


def test_garbage_and_broken_requests_do_not_stop_the_agent(agent) -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for junk in (b"\x00" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096),
                 preface + b"\x00\x00\x04\x01\x00\x00\x00\x00\x00garbage-frame-body" * 10, preface, b""):
        _send_raw(agent.socket_path, junk)
    with pytest.raises(grpc.RpcError) as err:  # a malformed protobuf message
        with grpc.insecure_channel(agent.endpoint) as channel:
            call = channel.unary_unary("/SpiffeWorkloadAPI/FetchJWTSVID", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
            call(b"\xff\xff\xff\xff", metadata=HEADER, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    resp = _stream(agent.endpoint, X509, pb.X509SVIDRequest(), pb.X509SVIDResponse, metadata=HEADER)
    assert resp.svids[0].spiffe_id == "spiffe://example.org/me"
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.log()
