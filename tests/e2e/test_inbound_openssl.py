"""An inbound listener in front of an app, probed with `openssl s_client` client certificates.

Only the right SVID reaches the app; every refusal leaves a record saying why.
Runs on every runtime x engine (one sidecar per combination, shared by the cases).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from proxy.demo.apps import HelloBackend
from support import pki, pki_cli
from support.net import free_port
from support.sidecar import Identity, SidecarHarness

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

ALLOWED = "spiffe://example.org/frontend"
POLICY = {"api": [{"name": "no-batch", "deny": ["spiffe://example.org/batch"]},
                  {"name": "frontend-reads", "allow": [ALLOWED]}]}


@pytest.fixture(scope="module")
def inbound(module_combo: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, ca: pki.Ca,
            other_ca: pki.Ca) -> Iterator[dict[str, Any]]:
    runtime, engine = module_combo
    d = tmp_path_factory.mktemp(f"inbound-{runtime}-{engine}")
    app = HelloBackend()
    port = free_port()
    ident = Identity.mint(d, ca, "/backend", federated={"other.org": other_ca})
    sc = SidecarHarness(d, runtime=runtime, engine=engine, identity=ident, policy=POLICY, name="backend",
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                  "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}], admin=True)
    with sc:
        yield {"sidecar": sc, "port": port, "dir": d, "bundle": ident.bundle}
    app.close()


def s_client(inbound: dict[str, Any], leaf: pki.Leaf | None, name: str, request: bool = True) -> str:
    """One HTTP request through `openssl s_client` (or none: it only reads); returns what it printed."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{inbound['port']}", "-CAfile", str(inbound["bundle"]),
           "-ign_eof", "-quiet", "-cipher", "DEFAULT:@SECLEVEL=0"]  # level 0: so it can present weak chains too
    if leaf is not None:
        cert, key = leaf.write_pem(Path(inbound["dir"]), name)
        cmd += ["-cert", cert, "-key", key]
        if len(leaf.chain) > 1:  # -cert sends only the file's first certificate
            chain = Path(inbound["dir"]) / f"{name}.chain.pem"
            chain.write_bytes(b"".join(pki.pem(c) for c in leaf.chain[1:]))
            cmd += ["-cert_chain", str(chain)]
    run = subprocess.run(cmd, input=b"GET /hello HTTP/1.0\r\n\r\n" if request else b"", capture_output=True,
                         timeout=20)
    return run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")


def probe(inbound: dict[str, Any], leaf: pki.Leaf | None, name: str,
          request: bool = True) -> tuple[str, dict[str, Any]]:
    sc: SidecarHarness = inbound["sidecar"]
    before = len(sc.records())
    output = s_client(inbound, leaf, name, request)
    sc.wait_record(lambda r: len(sc.records()) > before)
    return output, sc.records()[before]


def test_inbound_admits_the_right_svid(inbound: dict[str, Any], ca: pki.Ca) -> None:
    output, record = probe(inbound, pki.make_svid(ca, "/frontend"), "good")
    assert "hello from backend" in output
    assert (record["peer_id"], record["decision"], record["rule"]) == (ALLOWED, "allow", "frontend-reads")
    assert record["close_reason"] == "completed" and record["bytes_out"] > 0


def _case_leaf(case: str, ca: pki.Ca, other_ca: pki.Ca, rogue_ca: pki.Ca, expired: dict[str, Any]) -> pki.Leaf | None:
    return {
        "no_cert": lambda: None,
        "untrusted_ca": lambda: pki.make_svid(rogue_ca, "/frontend"),
        "other_td_signed_by_trusted_ca": lambda: pki.make_svid(ca, "spiffe://other.org/frontend"),
        "two_uri_sans": lambda: pki.make_svid(ca, uris=[ALLOWED, "spiffe://example.org/other"]),
        "expired": lambda: pki.make_svid(ca, "/frontend", **expired),
        "ca_leaf": lambda: pki.make_svid(ca, "/frontend", is_ca=True, key_cert_sign=True),
        "denied_by_policy": lambda: pki.make_svid(ca, "/batch"),
        "no_matching_rule": lambda: pki.make_svid(ca, "/stranger"),
        "weak_key_rsa1024": lambda: pki_cli.make_svid(ca, "/frontend", key_kind="rsa1024"),
        "weak_signature_sha1": lambda: pki_cli.make_svid(ca, "/frontend", digest="sha1"),
        "weak_intermediate_p224": lambda: pki.make_svid(pki_cli.make_ca("example.org", parent=ca, key_kind="p224"),
                                                        "/frontend"),
    }[case]()


REFUSALS = {
    # case: (close_reason, reason)
    "no_cert": ("verify_failed", {"no_client_cert", "no_certificate"}),
    "untrusted_ca": ("verify_failed", {"untrusted_chain"}),
    "other_td_signed_by_trusted_ca": ("verify_failed", {"untrusted_chain"}),
    "two_uri_sans": ("verify_failed", {"multiple_uri_sans"}),
    "expired": ("verify_failed", {"expired"}),
    "ca_leaf": ("verify_failed", {"leaf_is_ca"}),
    "denied_by_policy": ("denied", {"deny_rule"}),
    "no_matching_rule": ("denied", {"no_matching_rule"}),
    "weak_key_rsa1024": ("verify_failed", {"weak_key"}),
    "weak_signature_sha1": ("verify_failed", {"weak_signature"}),
    "weak_intermediate_p224": ("verify_failed", {"weak_key"}),
}
# The alert each engine sends a client it refuses in the handshake (issue 11 item 10).
ALERTS = {"expired": "alert certificate expired", "no_cert": "alert certificate required"}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_inbound_refuses_and_logs_why(case: str, inbound: dict[str, Any], ca: pki.Ca, other_ca: pki.Ca,
                                      rogue_ca: pki.Ca, expired_kwargs: dict[str, Any]) -> None:
    leaf = _case_leaf(case, ca, other_ca, rogue_ca, expired_kwargs)
    close_reason, reasons = REFUSALS[case]
    # A client refused in the handshake sends nothing: a request written after
    # the server's alert and close would end s_client (EPIPE) before it reads the alert.
    output, record = probe(inbound, leaf, case, request=close_reason != "verify_failed")
    assert "hello from backend" not in output
    assert record["close_reason"] == close_reason, record
    assert record["reason"] in reasons, record
    assert record["bytes_in"] == 0 and record["bytes_out"] == 0
    if close_reason == "verify_failed":
        assert ALERTS.get(case, "alert bad certificate") in output, output
    if case.startswith("weak_"):  # the new reasons are metric labels too, not folded into "other"
        assert inbound["sidecar"].metric("spiffe_sidecar_handshakes_total", listener="api", result="failure",
                                         reason=record["reason"]) >= 1
    if case == "denied_by_policy":
        assert record["rule"] == "no-batch" and "no-batch" in record["detail"]
