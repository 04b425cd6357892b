"""`spiffe-sidecar svid|jwt ...` as real processes against the grpcio Workload API."""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time

import grpc
from cryptography import x509
from support import pki
from support.agent import REPO
from support.grpcio_workload_server import x509_response

from proxy.spiffe.svid import X509Svid


def cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_svid_fetch_prints_and_writes_files_like_spiffe_helper(serving, tmp_path, ca, fed_ca) -> None:
    out = cli("svid", "fetch", "--address", serving.address, "--write", str(tmp_path / "certs"))
    assert out.returncode == 0, out.stderr
    assert "SPIFFE ID: spiffe://example.org/web" in out.stdout and "s left)" in out.stdout
    assert "trust domain: example.org (1 authority)" in out.stdout
    assert "trust domain: partner.test (1 authority)" in out.stdout
    d = tmp_path / "certs"
    assert stat.S_IMODE((d / "svid_key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "svid.pem").stat().st_mode) == 0o644
    svid = X509Svid.from_pem((d / "svid.pem").read_bytes(), (d / "svid_key.pem").read_bytes())
    assert str(svid.spiffe_id) == "spiffe://example.org/web"
    assert x509.load_pem_x509_certificates((d / "bundle.pem").read_bytes()) == [ca.cert]
    assert x509.load_pem_x509_certificates((d / "federated_partner.test.pem").read_bytes()) == [fed_ca.cert]


def test_svid_fetch_for_an_id_not_offered_exits_1_listing_what_is_offered(serving, tmp_path) -> None:
    out = cli("svid", "fetch", "--address", serving.address, "--spiffe-id", "spiffe://example.org/nope",
              "--write", str(tmp_path / "certs"))
    assert out.returncode == 1 and "offered: spiffe://example.org/web" in out.stderr, out.stderr
    assert not (tmp_path / "certs").exists()  # nothing written for an identity we do not hold
    chosen = cli("svid", "fetch", "--address", serving.address, "--spiffe-id", "spiffe://example.org/web")
    assert chosen.returncode == 0 and "SPIFFE ID: spiffe://example.org/web" in chosen.stdout, chosen.stderr


def test_jwt_fetch_then_validate(serving) -> None:
    fetched = cli("jwt", "fetch", "--address", serving.address, "--audience", "spiffe://example.org/db")
    assert fetched.returncode == 0, fetched.stderr
    assert "subject: spiffe://example.org/workload" in fetched.stderr
    token = fetched.stdout.strip()
    assert token.count(".") == 2
    ok = cli("jwt", "validate", "--address", serving.address, "--audience", "spiffe://example.org/db", token)
    assert ok.returncode == 0 and "valid: subject spiffe://example.org/workload" in ok.stdout
    bad = cli("jwt", "validate", "--address", serving.address, "--audience", "other", token)
    assert bad.returncode == 1 and bad.stdout.startswith("invalid:")


def test_svid_fetch_without_agent_exits_2_naming_the_socket(short_dir) -> None:
    out = cli("svid", "fetch", "--address", f"unix://{short_dir}/none.sock", "--timeout", "2")
    assert out.returncode == 2 and f"{short_dir}/none.sock" in out.stderr and "UNAVAILABLE" in out.stderr


def test_svid_watch_prints_each_update_and_survives_a_broken_stream(serving, ca) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPIFFE_ENDPOINT_SOCKET": serving.address}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "svid", "watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        # A reader thread feeds a queue so every wait is bounded by what is left of the deadline;
        # readline() on the pipe itself would block past it if the child went quiet.
        pending: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout

        def pump() -> None:
            for out_line in stdout:
                pending.put(out_line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 15
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = pending.get(timeout=remaining)
            except queue.Empty:
                break
            lines.append(line)
            if line.startswith("--- update 1"):
                serving.abort_streams(grpc.StatusCode.UNAVAILABLE, "agent restarting")
                serving.push_x509(x509_response([(pki.make_svid(ca, "/rotated"), ca)]))
            if "spiffe://example.org/rotated" in line:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) in (0, 130)
    finally:
        proc.kill()
    text = "".join(lines)
    assert "--- update 2" in text and "spiffe://example.org/rotated" in text
    assert "agent restarting" in proc.stderr.read()
    assert serving.count_calls("FetchX509SVID") == 2


def test_svid_watch_retries_unavailable_but_stops_at_once_on_invalid_argument(serving) -> None:
    serving.fail_next("FetchX509SVID", grpc.StatusCode.UNAVAILABLE, "agent busy", count=2)
    serving.fail_next("FetchX509SVID", grpc.StatusCode.INVALID_ARGUMENT, "bad request", count=1)
    out = cli("svid", "watch", "--address", serving.address)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.count("agent busy") == 2 and "(attempt 2)" in out.stderr
    assert "INVALID_ARGUMENT" in out.stderr and "bad request" in out.stderr
    assert serving.count_calls("FetchX509SVID") == 3
