"""HTTP listeners end to end: curl and raw clients through a real outbound + inbound sidecar pair.

Two sidecar processes per runtime x engine (module scope): the frontend's
outbound ``protocol: http`` listener, the backend's inbound ``protocol:
http`` listener in front of a real HTTP/1.1 app (``support.httpapp``) that
records every request it sees. The policy allows the frontend's reads on
``/v1/**`` and ``/healthz`` and denies ``/admin/**`` to everyone.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import h2.config
import h2.connection
import h2.events
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from support import pki
from support.httpapp import RecordingApp
from support.net import free_port, recv_all
from support.sidecar import Identity, Peer, SidecarHarness, running

FRONTEND, BACKEND = "spiffe://example.org/frontend", "spiffe://example.org/backend"
POLICY = {"api": [
    {"name": "no-admin", "deny": ["spiffe://example.org/**"], "http": {"paths": ["/admin/**"]}},
    {"name": "frontend-reads", "allow": [FRONTEND],
     "http": {"methods": ["GET", "HEAD", "POST"], "paths": ["/v1/**", "/healthz"]}},
]}
CURL_MODES = {"http1.1": ["--http1.1"], "http2-upgrade": ["--http2"], "h2c": ["--http2-prior-knowledge"]}


@pytest.fixture(scope="module")
def pair(module_combo: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
         ca: pki.Ca) -> Iterator[dict[str, Any]]:
    runtime, engine = module_combo
    d = tmp_path_factory.mktemp(f"http-{runtime}-{engine}")
    app = RecordingApp()
    b_port, a_port = free_port(), free_port()
    xfcc_ports = {mode: (free_port(), free_port()) for mode in ("append_forward", "forward_only")}
    front_id = Identity.mint(d, ca, "/frontend")
    backend = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/backend"),
                             name="backend", policy=POLICY, admin=True, inbound=[{
                                 "name": "api", "listen": f"127.0.0.1:{b_port}", "protocol": "http",
                                 "forward_to": f"127.0.0.1:{app.port}", "policy": "api",
                                 "http": {"max_head_bytes": 8192}}] + [{
                                     "name": f"api-{mode}", "listen": f"127.0.0.1:{ports[0]}", "protocol": "http",
                                     "forward_to": f"127.0.0.1:{app.port}", "policy": "api",
                                     "http": {"xfcc": mode}} for mode, ports in xfcc_ports.items()])
    frontend = SidecarHarness(d, runtime=runtime, engine=engine, identity=front_id, name="frontend", admin=True,
                              outbound=[{"name": "api-out", "listen": f"127.0.0.1:{a_port}", "protocol": "http",
                                         "connect_to": f"127.0.0.1:{b_port}", "expect": BACKEND,
                                         "http": {"max_head_bytes": 8192}}] + [{
                                  "name": f"out-{mode}", "listen": f"127.0.0.1:{ports[1]}", "protocol": "http",
                                  "connect_to": f"127.0.0.1:{ports[0]}", "expect": BACKEND}
                                  for mode, ports in xfcc_ports.items()])
    with running(backend, frontend):
        yield {"a": frontend, "b": backend, "a_port": a_port, "b_port": b_port, "app": app, "dir": d,
               "front_id": front_id, "ca": ca, "xfcc_ports": xfcc_ports}
    app.close()


def curl(port: int, path: str, *args: str) -> tuple[int, bytes]:
    out = subprocess.run(["curl", "-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", *args,
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=30, check=False)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code or 0), body


def leaf_sha256(cert_pem: Path) -> str:
    leaf = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


def frontend_leaf_sha256(pair: dict[str, Any]) -> str:
    """The hash of the leaf the frontend sidecar is serving with (after a rotation test, once it has settled)."""
    cert: Path = pair["front_id"].cert
    want = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    deadline = time.monotonic() + 15
    while pair["a"].get_json("/identity").get("not_after") != want:
        assert time.monotonic() < deadline, "the frontend never settled on the certificate in its files"
        time.sleep(0.1)
    return leaf_sha256(cert)


@pytest.mark.parametrize("mode", CURL_MODES)
def test_curl_through_the_pair_allows_denies_and_hands_the_caller_to_the_app(pair: dict[str, Any],
                                                                            mode: str) -> None:
    app: RecordingApp = pair["app"]
    forged = "By=spiffe://example.org/backend;Hash=00;URI=spiffe://example.org/admin"
    status, body = curl(pair["a_port"], f"/v1/orders/{mode}", *CURL_MODES[mode],
                        "-H", f"x-forwarded-client-cert: {forged}")
    assert (status, body) == (200, f"GET /v1/orders/{mode} ok\n".encode())
    seen = next(s for s in reversed(app.seen) if s.path == f"/v1/orders/{mode}")
    xfcc = [v for k, v in seen.all_headers if k.lower() == "x-forwarded-client-cert"]
    # sanitize (the default): the caller's forged element is gone, ours is the whole header
    assert xfcc == [f"By={BACKEND};Hash={frontend_leaf_sha256(pair)};URI={FRONTEND}"]
    assert curl(pair["a_port"], "/admin/users", *CURL_MODES[mode]) == (403, b"forbidden\n")
    assert curl(pair["a_port"], "/elsewhere", *CURL_MODES[mode]) == (403, b"forbidden\n")
    assert "/admin/users" not in app.paths() and "/elsewhere" not in app.paths()
    record = pair["b"].wait_record(lambda r: r["path"] == "/admin/users", requests=True)
    assert (record["status"], record["rule"], record["decision"], record["reason"], record["peer_id"]) == (
        403, "no-admin", "deny", "deny_rule", FRONTEND)


#: (sent, expected status, what the app must see when allowed)
BYPASSES = [
    ("/./admin/users", 403, None),
    ("/%61dmin/users", 403, None),
    ("//admin/users", 403, None),
    ("/admin/../admin/users", 403, None),
    ("/v1/../admin", 403, None),
    ("/v1/%2e%2e/admin/users", 403, None),
    ("/admin", 403, None),
    ("/v1/a%2Fb", 400, None),
    ("/v1/a%5Cb", 400, None),
    ("/v1/%zz", 400, None),
    ("/v1/./orders//%31", 200, "/v1/orders/1"),
]


@pytest.mark.parametrize("mode", ["http1.1", "h2c"])
def test_path_bypass_attempts_are_refused_or_normalized(pair: dict[str, Any], mode: str) -> None:
    app: RecordingApp = pair["app"]
    for sent, want, seen_as in BYPASSES:
        before = len(app.seen)
        status, _ = curl(pair["a_port"], sent, *CURL_MODES[mode])
        assert status == want, sent
        if seen_as is None:
            assert len(app.seen) == before, f"{sent} reached the app"
        else:
            assert app.paths()[-1] == seen_as


def _raw_inbound(pair: dict[str, Any], payload: bytes) -> bytes:
    # Its own directory: minting into the frontend sidecar's would rotate the sidecar's identity.
    own = pair["dir"] / "raw-peer"
    own.mkdir(exist_ok=True)
    peer = Peer(own, pair["ca"], FRONTEND)
    with peer.connect(pair["b_port"], timeout=10) as tls:
        tls.sendall(payload)
        return recv_all(tls)


SMUGGLING = {
    "cl-te": b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "te-cl": b"POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
             b"5c\r\nGET /v1/smuggled HTTP/1.1\r\nHost: a\r\n\r\n0\r\n\r\n",
    "two-cl": b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n"
              b"GET /v1/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad-chunk-size": b"POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"zz\r\nGET /v1/smuggled HTTP/1.1\r\nHost: a\r\n\r\n0\r\n\r\n",
    "te-not-chunked": b"POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                      b"0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "cr-in-header": b"GET /v1/x HTTP/1.1\r\nHost: a\r\nX-A: b\rGET /v1/smuggled HTTP/1.1\r\n\r\n",
    "lf-in-header": b"GET /v1/x HTTP/1.1\r\nHost: a\nX-A: b\nGET /v1/smuggled HTTP/1.1\r\n\r\n",
    "obs-fold": b"GET /v1/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n GET /v1/smuggled HTTP/1.1\r\n\r\n",
    "over-long-head": b"GET /v1/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("case", SMUGGLING)
@pytest.mark.parametrize("side", ["inbound-mtls", "outbound-plaintext"])
def test_smuggling_never_reaches_the_app_as_two_requests(pair: dict[str, Any], case: str, side: str) -> None:
    app: RecordingApp = pair["app"]
    before = len(app.seen)
    if side == "inbound-mtls":
        reply = _raw_inbound(pair, SMUGGLING[case])
    else:
        with socket.create_connection(("127.0.0.1", pair["a_port"]), timeout=10) as sock:
            sock.sendall(SMUGGLING[case])
            reply = recv_all(sock)
    assert reply.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ", b"HTTP/1.1 501 ")), reply[:200]
    assert b"connection: close" in reply.lower()
    assert "/v1/smuggled" not in app.paths()
    assert len(app.seen) - before <= 1


def test_an_over_long_h2_header_list_is_refused_on_that_stream(pair: dict[str, Any]) -> None:
    big = "a" * 9000
    status, _ = curl(pair["a_port"], "/v1/big-h2", "--http2-prior-knowledge", "-H", f"x-big: {big}")
    assert status == 431
    assert "/v1/big-h2" not in pair["app"].paths()


def test_a_denied_request_leaves_the_keepalive_connection_usable(pair: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", pair["a_port"]), timeout=10) as sock:
        sock.sendall(b"POST /admin/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                     b"GET /v1/after-deny HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        reply = recv_all(sock)
    first, _, second = reply.partition(b"forbidden\n")
    assert first.startswith(b"HTTP/1.1 403 ") and second.startswith(b"HTTP/1.1 200 ")
    assert second.endswith(b"GET /v1/after-deny ok\n")


def test_a_hundred_app_connections_reuse_a_handful_of_mtls_connections_through_a_rotation(
        pair: dict[str, Any]) -> None:
    frontend: SidecarHarness = pair["a"]
    handshakes = frontend.metric("spiffe_sidecar_http_pool_handshakes_total")
    generation = frontend.metric("spiffe_sidecar_svid_generation")

    def one(i: int) -> int:
        return curl(pair["a_port"], f"/v1/load/{i}", "--http1.1")[0]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        first = list(pool.map(one, range(100)))
        assert first == [200] * 100
        made = frontend.metric("spiffe_sidecar_http_pool_handshakes_total") - handshakes
        assert made <= 4, f"{made} handshakes for 100 app connections"
        # Rotate the frontend's SVID (a new key) while requests keep coming.
        futures = [pool.submit(one, 100 + i) for i in range(200)]
        _rotate(pair)
        deadline = time.monotonic() + 15
        while frontend.metric("spiffe_sidecar_svid_generation") <= generation and time.monotonic() < deadline:
            time.sleep(0.1)
        futures += [pool.submit(one, 300 + i) for i in range(50)]
        results = [f.result() for f in futures]
    assert results == [200] * len(results)
    assert frontend.metric("spiffe_sidecar_svid_generation") > generation
    # The new identity got its own connection(s): a rotation never reuses the old generation's.
    assert frontend.metric("spiffe_sidecar_http_pool_handshakes_total") - handshakes >= made + 1


def _rotate(pair: dict[str, Any]) -> None:
    ident: Identity = pair["front_id"]
    staging = pair["dir"] / "staging"
    staging.mkdir(exist_ok=True)
    cert, key = pki.make_svid(pair["ca"], "/frontend").write_pem(staging, "rotated")
    Path(key).replace(ident.key)
    Path(cert).replace(ident.cert)


def test_h2_client_with_a_hundred_concurrent_streams_one_denied_leaves_the_others_alone(
        pair: dict[str, Any]) -> None:
    paths = [f"/v1/stream/{i}" if i % 10 else f"/admin/stream/{i}" for i in range(100)]
    responses = _h2_get_all(pair["a_port"], paths)
    for path in paths:
        status, body = responses[path]
        if path.startswith("/admin"):
            assert (status, body) == (403, b"forbidden\n"), path
        else:
            assert (status, body) == (200, f"GET {path} ok\n".encode()), path
    assert not any(p.startswith("/admin/stream") for p in pair["app"].paths())


def _h2_get_all(port: int, paths: list[str]) -> dict[str, tuple[int, bytes]]:
    """An h2c (prior knowledge) client: every request sent before any response is read."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    by_stream: dict[int, str] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for path in paths:
            sid = conn.get_next_available_stream_id()
            by_stream[sid] = path
            conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"api"),
                                    (b":path", path.encode())], end_stream=True)
        sock.sendall(conn.data_to_send())
        status: dict[int, int] = {}
        bodies: dict[int, bytes] = {sid: b"" for sid in by_stream}
        done: set[int] = set()
        while len(done) < len(paths):
            data = sock.recv(65536)
            assert data, f"connection closed with {len(paths) - len(done)} streams unanswered"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done.add(event.stream_id)
            sock.sendall(conn.data_to_send())
    return {by_stream[sid]: (status.get(sid, 0), bodies[sid]) for sid in by_stream}


def test_the_access_log_has_one_line_per_request_and_metrics_never_label_the_path(pair: dict[str, Any]) -> None:
    assert curl(pair["a_port"], "/v1/logged", "--http1.1")[0] == 200
    rec = pair["b"].wait_record(lambda r: r["path"] == "/v1/logged", requests=True)
    assert {"method", "path", "status", "peer_id", "rule", "decision", "reason", "bytes_in", "bytes_out",
            "duration"} <= set(rec)
    out = pair["a"].wait_record(lambda r: r["path"] == "/v1/logged", requests=True)
    assert out["direction"] == "outbound" and out["upstream"] == BACKEND
    metrics = pair["b"].metrics()
    samples = [labels for (name, labels) in metrics if name == "spiffe_sidecar_http_requests_total"]
    assert samples and all("path" not in dict(labels) for labels in samples)
    assert pair["b"].metric("spiffe_sidecar_http_requests_total", rule="no-admin", decision="deny",
                            status_class="4xx") >= 1


def test_a_connection_that_is_not_http_is_closed_not_relayed(pair: dict[str, Any]) -> None:
    before = len(pair["app"].seen)
    with socket.create_connection(("127.0.0.1", pair["a_port"]), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello-not-http")
        try:
            assert recv_all(sock) == b""  # closed, nothing answered...
        except ConnectionResetError:
            pass  # ...or reset: either way nothing was relayed
    rec = pair["a"].wait_record(lambda r: r.get("event") == "connection" and r["close_reason"] == "not_http")
    assert rec["listener"] == "api-out"
    assert len(pair["app"].seen) == before


def test_admin_policy_explain_answers_for_a_request(pair: dict[str, Any]) -> None:
    backend: SidecarHarness = pair["b"]
    answer = backend.get_json(f"/policy/explain?listener=api&peer={FRONTEND}&method=GET&path=/./admin/x")
    assert (answer["allowed"], answer["rule"], answer["request"]) == (False, "no-admin", "GET /admin/x")
    answer = backend.get_json(f"/policy/explain?listener=api&peer={FRONTEND}&method=GET&path=/v1/x")
    assert (answer["allowed"], answer["rule"]) == (True, "frontend-reads")
    status, _ = backend.get(f"/policy/explain?listener=api&peer={FRONTEND}&path=/a%252Fb")
    assert status == 400


def test_a_tls_peer_that_does_not_speak_http_is_closed(pair: dict[str, Any]) -> None:
    reply = _raw_inbound(pair, b"\x00\x01\x02 this is not http\r\n\r\n")
    assert reply == b""
    rec = pair["b"].wait_record(lambda r: r.get("event") == "connection" and r["close_reason"] == "not_http")
    assert rec["peer_id"] == FRONTEND


def test_a_pooled_connection_the_upstream_closed_while_idle_is_not_used(
        combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    runtime, engine = combo
    app = RecordingApp()
    b_port, a_port = free_port(), free_port()
    backend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                             name="backend", policy=POLICY, inbound=[{
                                 "name": "api", "listen": f"127.0.0.1:{b_port}", "protocol": "http",
                                 "forward_to": f"127.0.0.1:{app.port}", "policy": "api",
                                 "limits": {"idle_timeout": "1s"}}])
    frontend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, admin=True, name="frontend",
                              identity=Identity.mint(tmp_path, ca, "/frontend"),
                              outbound=[{"name": "api-out", "listen": f"127.0.0.1:{a_port}", "protocol": "http",
                                         "connect_to": f"127.0.0.1:{b_port}", "expect": BACKEND}])
    try:
        with running(backend, frontend):
            for mode in ("http1.1", "h2c"):
                idle_closed = sum(r.get("close_reason") == "idle_timeout" for r in backend.records())
                assert curl(a_port, f"/v1/before-idle-{mode}", *CURL_MODES[mode])[0] == 200
                deadline = time.monotonic() + 10
                while sum(r.get("close_reason") == "idle_timeout" for r in backend.records()) <= idle_closed:
                    assert time.monotonic() < deadline, "the backend never closed the idle pooled connection"
                    time.sleep(0.1)
                assert curl(a_port, f"/v1/after-idle-{mode}", *CURL_MODES[mode])[0] == 200
            assert frontend.metric("spiffe_sidecar_http_pool_handshakes_total") >= 2
    finally:
        app.close()


def test_a_policy_reload_reaches_the_next_request_on_a_kept_pooled_connection(
        combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    import json

    runtime, engine = combo
    app = RecordingApp()
    b_port, a_port = free_port(), free_port()
    backend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                             name="backend", policy=POLICY, inbound=[{
                                 "name": "api", "listen": f"127.0.0.1:{b_port}", "protocol": "http",
                                 "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}])
    frontend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, admin=True, name="frontend",
                              identity=Identity.mint(tmp_path, ca, "/frontend"),
                              outbound=[{"name": "api-out", "listen": f"127.0.0.1:{a_port}", "protocol": "http",
                                         "connect_to": f"127.0.0.1:{b_port}", "expect": BACKEND}])
    try:
        with running(backend, frontend):
            assert curl(a_port, "/v1/orders/1", "--http1.1")[0] == 200
            tightened = {"api": [{"name": "read-only-healthz", "allow": [FRONTEND], "http": {"paths": ["/healthz"]}}]}
            backend.write_policy(json.dumps({"policies": tightened}))
            deadline = time.monotonic() + 10
            while curl(a_port, "/v1/orders/2", "--http1.1")[0] != 403:
                assert time.monotonic() < deadline, "the reloaded policy never reached the kept connection"
                time.sleep(0.2)
            assert curl(a_port, "/healthz", "--http1.1")[0] == 200
            # Same pooled mTLS connection all along: the reload reached its next requests.
            assert frontend.metric("spiffe_sidecar_http_pool_handshakes_total") == 1
    finally:
        app.close()


def test_inbound_h1_refusal_drains_a_small_body_and_keeps_the_connection(pair: dict[str, Any]) -> None:
    reply = _raw_inbound(pair, b"POST /admin/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                               b"GET /v1/after-inbound-deny HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    first, _, second = reply.partition(b"forbidden\n")
    assert first.startswith(b"HTTP/1.1 403 ") and b"connection: close" not in first.lower()
    assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(b"GET /v1/after-inbound-deny ok\n")
    # A refused request whose body is not read closes instead (nothing after it could be framed safely).
    reply = _raw_inbound(pair, b"POST /admin/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n0\r\n\r\nGET /v1/after-chunked-deny HTTP/1.1\r\nHost: a\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 403 ") and b"connection: close" in reply.lower()
    assert "/v1/after-chunked-deny" not in pair["app"].paths()


@pytest.mark.parametrize("mode", ["http1.1", "h2c"])
def test_large_bodies_stream_both_ways_under_flow_control(pair: dict[str, Any], mode: str, tmp_path: Path) -> None:
    payload = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: several h2 windows each way
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    status, body = curl(pair["a_port"], f"/v1/upload-{mode}", *CURL_MODES[mode], "--data-binary", f"@{upload}",
                        "-H", "content-type: application/octet-stream")
    assert status == 200
    assert body == f"POST /v1/upload-{mode} ok\n".encode() + payload
    seen = next(s for s in reversed(pair["app"].seen) if s.path == f"/v1/upload-{mode}")
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("mode", ["http1.1", "h2c"])
def test_head_keeps_its_content_length_and_sends_no_body(pair: dict[str, Any], mode: str) -> None:
    out = subprocess.run(["curl", "-sS", "-I", *CURL_MODES[mode], f"http://127.0.0.1:{pair['a_port']}/v1/head-{mode}"],
                         capture_output=True, timeout=30, check=True).stdout.lower()
    assert out.split(b"\r\n", 1)[0].endswith((b" 200", b" 200 ok", b" 200 "))
    assert f"content-length: {len(f'HEAD /v1/head-{mode} ok') + 1}".encode() in out


def test_an_app_that_is_down_answers_502_promptly_and_the_next_request_recovers(
        combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    runtime, engine = combo
    app_port, b_port, a_port = free_port(), free_port(), free_port()  # nothing listens on app_port yet
    backend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                             name="backend", policy=POLICY, inbound=[{
                                 "name": "api", "listen": f"127.0.0.1:{b_port}", "protocol": "http",
                                 "forward_to": f"127.0.0.1:{app_port}", "policy": "api"}])
    frontend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, name="frontend",
                              identity=Identity.mint(tmp_path, ca, "/frontend"),
                              outbound=[{"name": "api-out", "listen": f"127.0.0.1:{a_port}", "protocol": "http",
                                         "connect_to": f"127.0.0.1:{b_port}", "expect": BACKEND}])
    with running(backend, frontend):
        for mode in ("http1.1", "h2c"):
            started = time.monotonic()
            assert curl(a_port, "/v1/down", *CURL_MODES[mode]) == (502, b"bad gateway\n")
            assert time.monotonic() - started < 10
        app = RecordingApp.on_port(app_port)
        try:
            assert curl(a_port, "/v1/up-again", "--http1.1")[0] == 200
        finally:
            app.close()


def test_outbound_http_to_a_tcp_inbound_pools_http11_connections_within_pool_size(
        combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    """No ALPN from a protocol: tcp inbound: the pool speaks HTTP/1.1, one request per connection at a time."""
    runtime, engine = combo
    app = RecordingApp()
    b_port, a_port = free_port(), free_port()
    backend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                             name="backend", policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]},
                             inbound=[{"name": "api", "listen": f"127.0.0.1:{b_port}",
                                       "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}])
    frontend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, admin=True, name="frontend",
                              identity=Identity.mint(tmp_path, ca, "/frontend"),
                              outbound=[{"name": "api-out", "listen": f"127.0.0.1:{a_port}", "protocol": "http",
                                         "connect_to": f"127.0.0.1:{b_port}", "expect": BACKEND,
                                         "http": {"pool_size": 2}}])
    try:
        with running(backend, frontend):
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda i: curl(a_port, f"/v1/h1pool/{i}", "--http1.1")[0], range(40)))
            assert codes == [200] * 40
            assert sorted(app.paths()) == sorted(f"/v1/h1pool/{i}" for i in range(40))
            assert frontend.metric("spiffe_sidecar_http_pool_handshakes_total") <= 2
            assert len({s.connection for s in app.seen}) <= 2  # the app saw the pool's connections, reused
    finally:
        app.close()


@pytest.mark.parametrize("mode", ["append_forward", "forward_only"])
def test_xfcc_append_forward_and_forward_only_keep_what_the_caller_sent(pair: dict[str, Any], mode: str) -> None:
    caller = "By=spiffe://example.org/frontend;URI=spiffe://example.org/end-user-proxy"
    status, _ = curl(pair["xfcc_ports"][mode][1], f"/v1/xfcc-{mode}", "--http1.1",
                     "-H", f"x-forwarded-client-cert: {caller}")
    assert status == 200
    seen = next(s for s in reversed(pair["app"].seen) if s.path == f"/v1/xfcc-{mode}")
    ours = f"By={BACKEND};Hash={frontend_leaf_sha256(pair)};URI={FRONTEND}"
    want = f"{caller},{ours}" if mode == "append_forward" else caller
    assert [v for k, v in seen.all_headers if k.lower() == "x-forwarded-client-cert"] == [want]


def test_a_stream_the_client_resets_leaves_the_pooled_connection_alone(pair: dict[str, Any]) -> None:
    frontend: SidecarHarness = pair["a"]
    frontend_leaf_sha256(pair)  # a rotation earlier in the module has settled: no new generation mid-test
    assert curl(pair["a_port"], "/v1/warm-up", "--http2-prior-knowledge")[0] == 200
    handshakes = frontend.metric("spiffe_sidecar_http_pool_handshakes_total")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    get = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"api")]
    with socket.create_connection(("127.0.0.1", pair["a_port"]), timeout=30) as sock:
        # Ask, then walk away at once: the answer meets a stream the client already reset.
        conn.send_headers(1, [*get, (b":path", b"/v1/asked-then-reset")], end_stream=True)
        conn.reset_stream(1)
        sock.sendall(conn.data_to_send())
        time.sleep(0.5)
        conn.send_headers(3, [*get, (b":path", b"/v1/after-reset")], end_stream=True)
        sock.sendall(conn.data_to_send())
        status = 0
        while True:
            data = sock.recv(65536)
            assert data, "the connection closed before stream 3 was answered"
            events = conn.receive_data(data)
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 3:
                    status = int(dict(event.headers)[b":status"])
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            sock.sendall(conn.data_to_send())
            if any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 3 for e in events):
                break
    assert status == 200
    assert curl(pair["a_port"], "/v1/after-reset-new-connection", "--http2-prior-knowledge")[0] == 200
    # The reset cancelled one stream upstream; the pooled mTLS connection kept serving.
    assert frontend.metric("spiffe_sidecar_http_pool_handshakes_total") == handshakes
