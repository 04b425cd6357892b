"""An outbound listener originating mTLS to `openssl s_server` upstreams (OpenSSL interop).

The right server SVID gets the app's bytes through; a server whose chain
does not verify, or whose ID is not the expected one, is refused with the
reason in the record. Runs on every runtime x engine.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import pki, pki_cli
from support.net import free_port, recv_all, wait_for_port
from support.sidecar import Identity, SidecarHarness

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
BACKEND = "spiffe://example.org/backend"


def s_server(directory: Path, leaf: pki.Leaf, ca: pki.Ca, name: str) -> tuple[subprocess.Popen[bytes], int]:
    """`openssl s_server -www` with ``leaf``, requiring a client certificate from ``ca``."""
    cert, key = leaf.write_pem(directory, name)
    cafile = directory / f"{name}.ca.pem"
    cafile.write_bytes(pki.pem(ca.cert))
    port = free_port()
    # Security level 0, so that the weak servers can present their chains at all.
    cmd = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert, "-key", key,
           "-CAfile", str(cafile), "-Verify", "1", "-www", "-naccept", "100", "-cipher", "DEFAULT:@SECLEVEL=0"]
    if len(leaf.chain) > 1:  # -cert sends only the file's first certificate
        chain = directory / f"{name}.chain.pem"
        chain.write_bytes(b"".join(pki.pem(c) for c in leaf.chain[1:]))
        cmd += ["-cert_chain", str(chain)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, port


@pytest.fixture(scope="module")
def outbound(module_combo: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, ca: pki.Ca,
             rogue_ca: pki.Ca) -> Iterator[dict[str, Any]]:
    runtime, engine = module_combo
    d = tmp_path_factory.mktemp(f"outbound-{runtime}-{engine}")
    servers = {"good": s_server(d, pki.make_svid(ca, "/backend"), ca, "good"),
               "rogue": s_server(d, pki.make_svid(rogue_ca, "/backend"), ca, "rogue"),
               "other": s_server(d, pki.make_svid(ca, "/payments"), ca, "other"),
               "weak_key": s_server(d, pki_cli.make_svid(ca, "/backend", key_kind="rsa1024"), ca, "weak_key"),
               "weak_signature": s_server(d, pki_cli.make_svid(ca, "/backend", digest="sha1"), ca, "weak_signature"),
               "weak_intermediate": s_server(d, pki.make_svid(pki_cli.make_ca("example.org", parent=ca,
                                                                              key_kind="rsa512"), "/backend"),
                                             ca, "weak_intermediate")}
    ports = {name: free_port() for name in servers}
    sc = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/frontend"), name="front",
                        outbound=[{"name": name, "listen": f"127.0.0.1:{ports[name]}",
                                   "connect_to": f"127.0.0.1:{port}", "expect": BACKEND}
                                  for name, (_, port) in servers.items()])
    try:
        with sc:
            yield {"sidecar": sc, "ports": ports}
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(5)


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return recv_all(sock)
        except OSError:
            return b""


def test_outbound_reaches_an_openssl_server_with_the_expected_svid(outbound: dict[str, Any]) -> None:
    assert b"200 ok" in get(outbound["ports"]["good"]).lower()
    rec = outbound["sidecar"].wait_record(lambda r: r["listener"] == "good")
    assert (rec["peer_id"], rec["decision"], rec["close_reason"]) == (BACKEND, "allow", "completed")


@pytest.mark.parametrize("server, close_reason, reason", [
    ("rogue", "verify_failed", "untrusted_chain"),
    ("other", "denied", "unexpected_peer"),
    ("weak_key", "verify_failed", "weak_key"),
    ("weak_signature", "verify_failed", "weak_signature"),
    ("weak_intermediate", "verify_failed", "weak_key"),
])
def test_outbound_refuses_a_server_it_cannot_trust_or_did_not_expect(outbound: dict[str, Any], server: str,
                                                                     close_reason: str, reason: str) -> None:
    assert get(outbound["ports"][server]) == b""
    rec = outbound["sidecar"].wait_record(lambda r: r["listener"] == server)
    assert (rec["close_reason"], rec["reason"], rec["bytes_out"]) == (close_reason, reason, 0)
