"""A standard SPIFFE client (the `spiffe` package, grpcio) works against the agent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from support.agent import EXAMPLE_CONFIG, REPO, SCRIPTS, AgentProcess, read_until_status, start_watch
from proxy.spiffe.bundle import X509Bundle
from proxy.spiffe.id import SpiffeId, TrustDomain
from proxy.spiffe.svid import X509Svid


def _run_client(endpoint: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPTS / "spiffe_lib_client.py"), endpoint], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(os.getuid() != 0, reason="examples/agent.yaml grants identities to unix:uid:0")
def test_spiffe_library_fetches_and_validates_from_the_example_config(short_dir: Path) -> None:
    with AgentProcess(EXAMPLE_CONFIG, short_dir / "agent.sock") as agent:
        got = _run_client(agent.endpoint)
        log = agent.log()
    assert got["default_svid"] == "spiffe://example.org/frontend"
    assert got["svids"][0] == "spiffe://example.org/frontend" and "spiffe://example.org/sidecar" in got["svids"]
    assert got["x509_bundles"] == ["example.org"]
    assert got["jwt_spiffe_id"] == "spiffe://example.org/frontend"
    assert got["jwt_bundle_kids"]["example.org"]
    assert got["validated_spiffe_id"] == "spiffe://example.org/frontend"
    leaf = x509.load_der_x509_certificate(bytes.fromhex(got["leaf_der_hex"]))
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert "attested pid=" in log and "x509-svid issued spiffe_id=spiffe://example.org/frontend" in log


def test_svids_rotate_at_least_twice_with_a_short_ttl(agent_factory) -> None:
    exe = os.path.realpath(sys.executable)
    digest = hashlib.sha256(Path(exe).read_bytes()).hexdigest()
    agent = agent_factory(
        [{"spiffe_id": "spiffe://example.org/app", "federates_with": ["partner.test"], "hint": "app",
          "selectors": [f"unix:uid:{os.getuid()}", f"unix:path:{exe}", f"unix:sha256:{digest}"]}],
        trust_domains=["example.org", "partner.test"], x509_svid_ttl="3s")
    proc, lines = start_watch(agent.endpoint, 5.0)
    messages, status = read_until_status(lines, timeout=20)
    proc.wait(10)
    serials = [m["svids"][0]["serial"] for m in messages]
    assert len(set(serials)) >= 3, (serials, agent.log())  # the first SVID plus at least 2 rotations
    assert status["code"] == "DEADLINE_EXCEEDED"  # the client's own deadline, honoured by the agent
    # Renewed at half-life: each new SVID arrives before the previous one expires.
    for prev, cur in zip(messages, messages[1:]):
        assert cur["t"] < prev["svids"][0]["not_after"]
    assert all(m["federated"] == ["spiffe://partner.test"] for m in messages)
    assert messages[0]["svids"][0]["hint"] == "app"


def test_in_process_agent_serves_the_spiffe_library(short_dir: Path) -> None:
    """The importable API the demo uses: serve_agent under a trio nursery."""
    import trio

    from proxy.agent.config import agent_config
    from proxy.agent.server import serve_agent

    config = agent_config(socket_path=short_dir / "inproc.sock",
                          entries=[("spiffe://example.org/inproc", [f"unix:uid:{os.getuid()}"])])

    async def main() -> dict:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(serve_agent, config)
            got = await trio.to_thread.run_sync(_run_client, handle.endpoint)
            bundle_der = handle.state.issuer.cas[TrustDomain.parse("example.org")].x509_bundle_der()
            nursery.cancel_scope.cancel()
        return {**got, "bundle": bundle_der}

    got = trio.run(main)
    assert got["default_svid"] == "spiffe://example.org/inproc"
    bundle = X509Bundle.from_der_blob(TrustDomain.parse("example.org"), got["bundle"])
    assert bundle.certificates()
    assert not (short_dir / "inproc.sock").exists()  # removed on shutdown


def test_ca_rotation_publishes_old_and_new_authorities_on_the_bundle_streams(agent_factory) -> None:
    import grpc

    from proxy.workload_api import workload_pb2 as pb
    from proxy.spiffe.svid import split_der_certificates

    agent = agent_factory([("spiffe://example.org/app", [f"unix:uid:{os.getuid()}"])],
                          trust_domains=[{"name": "example.org", "ca_ttl": "6s"}], x509_svid_ttl="2s")
    header = [("workload.spiffe.io", "true")]
    with grpc.insecure_channel(agent.endpoint) as channel:
        bundles = channel.unary_stream("/SpiffeWorkloadAPI/FetchX509Bundles",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=pb.X509BundlesResponse.FromString)
        counts = []
        try:
            for resp in bundles(pb.X509BundlesRequest(), metadata=header, timeout=6):
                counts.append(len(split_der_certificates(resp.bundles["spiffe://example.org"])))
                if len(counts) >= 2 and counts[-1] == 2:
                    break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        jwt = channel.unary_stream("/SpiffeWorkloadAPI/FetchJWTBundles",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=pb.JWTBundlesResponse.FromString)
        first = next(iter(jwt(pb.JWTBundlesRequest(), metadata=header, timeout=5)))
    assert counts[0] == 1 and 2 in counts, (counts, agent.log())  # the next authority published at half-life
    assert len(json.loads(first.bundles["spiffe://example.org"])["keys"]) == 2  # and its JWT key too
    assert "ca rotation trust_domain=example.org authorities=2" in agent.log()
