"""Operating a real sidecar process: admin endpoint, metrics, live policy reload, graceful drain.

One backend sidecar per runtime (files identity, inbound "api" in front of an
echo app, admin endpoint on) is shared by the module's read-mostly tests;
the drain test starts its own. Clients are plain Python ``ssl`` mTLS
clients holding minted SVIDs, so a test can be an allowed peer (frontend)
or a refused one (intruder) without another sidecar in the way.
"""

from __future__ import annotations

import json
import re
import signal
import ssl
import threading
import time
from typing import Any, Iterator

import pytest

from support import pki
from support.net import EchoServer, free_port
from support.sidecar import BACKEND, FRONTEND, Identity, Peer, SidecarHarness, eventually as _eventually, fastpath_available
from support.sidecar import read_exactly as _read_exactly

INTRUDER = "spiffe://example.org/intruder"
ALLOW_FRONTEND = json.dumps({"policies": {"api": [{"name": "frontend-only", "allow": [FRONTEND]}]}})
ALLOW_INTRUDER = json.dumps({"policies": {"api": [{"name": "intruder-only", "allow": [INTRUDER]}]}})


def _runtimes() -> list[Any]:
    engine = "fastpath" if fastpath_available() else "python"
    return [pytest.param(("trio", engine), id=f"trio-{engine}"), pytest.param(("uvloop", "python"), id="uvloop-python")]


@pytest.fixture(scope="module", params=_runtimes())
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            ca: pki.Ca) -> Iterator[tuple[SidecarHarness, dict[str, Peer]]]:
    runtime, engine = request.param
    d = tmp_path_factory.mktemp(f"ops-{runtime}")
    app, port = EchoServer(), free_port()
    sc = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/backend"), admin=True,
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                  "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                        policy={"api": [{"name": "frontend-only", "allow": [FRONTEND]}]})
    sc.port = port  # type: ignore[attr-defined]
    peers = {"frontend": Peer(d, ca, FRONTEND), "intruder": Peer(d, ca, INTRUDER)}
    with sc:
        yield sc, peers
    app.close()


@pytest.fixture()
def ops(backend: tuple[SidecarHarness, dict[str, Peer]]) -> Iterator[tuple[SidecarHarness, dict[str, Peer]]]:
    """The shared backend, with the frontend-only policy back in force after each test."""
    yield backend
    sc = backend[0]
    sc.write_policy(ALLOW_FRONTEND)
    _eventually(lambda: not sc.get_json("/ready")["policy"]["stale"] and backend[1]["frontend"].echo(sc.port),
                5, "frontend-only policy restored")


def test_admin_endpoint_is_live_ready_and_describes_identity_config_and_policy(ops: Any) -> None:
    sc, _ = ops
    assert sc.get("/live")[0] == 200
    status, body = sc.get("/ready")
    assert status == 200, body
    ident = sc.get_json("/identity")
    assert ident["spiffe_id"] == BACKEND and ident["ready"] and ident["seconds_to_expiry"] > 0
    assert len(ident["trust_domains"]["example.org"][0]) == 64  # sha256 fingerprint of the authority
    config = sc.get_json("/config")
    assert config["inbound"][0]["policy"] == "api" and "BEGIN" not in json.dumps(config)
    allowed = sc.get_json(f"/policy/explain?listener=api&peer={FRONTEND}")
    denied = sc.get_json(f"/policy/explain?listener=api&peer={INTRUDER}")
    assert (allowed["allowed"], allowed["rule"]) == (True, "frontend-only")
    assert (denied["allowed"], denied["reason"]) == (False, "no_matching_rule")
    assert sc.get("/policy/explain?listener=nope&peer=x")[0] == 404


def test_metrics_parse_and_count_allowed_and_denied_connections(ops: Any) -> None:
    sc, peers = ops
    before = sc.metrics()
    assert ("spiffe_sidecar_identity_ready", ()) in before

    def value(snapshot: dict[Any, float], name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in snapshot.items() if n == name and set(labels.items()) <= set(ls))

    assert peers["frontend"].echo(sc.port, b"x" * 1000)
    assert not peers["intruder"].echo(sc.port)
    sc.wait_record(lambda r: r["peer_id"] == INTRUDER and r["decision"] == "deny")
    _eventually(lambda: value(sc.metrics(), "spiffe_sidecar_authz_decisions_total", decision="deny")
                > value(before, "spiffe_sidecar_authz_decisions_total", decision="deny"), 5, "deny counted")
    after = sc.metrics()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("spiffe_sidecar_authz_decisions_total", listener="api", rule="frontend-only", decision="allow") >= 1
    assert moved("spiffe_sidecar_authz_decisions_total", listener="api", decision="deny",
                 reason="no_matching_rule") >= 1
    assert moved("spiffe_sidecar_connections_opened_total", listener="api") >= 2
    assert moved("spiffe_sidecar_connections_closed_total", listener="api", reason="denied") >= 1
    assert moved("spiffe_sidecar_handshakes_total", listener="api", result="success") >= 2
    assert moved("spiffe_sidecar_handshake_duration_seconds_count", listener="api") >= 2
    assert moved("spiffe_sidecar_bytes_in_total", listener="api") >= 1000
    assert value(after, "spiffe_sidecar_svid_seconds_to_expiry") > 0
    assert not any("spiffe://" in str(labels) for (_, labels) in after), "a peer ID became a label"


def test_policy_edited_under_traffic_applies_to_new_connections_within_a_second(ops: Any) -> None:
    sc, peers = ops
    held = [peers["frontend"].connect(sc.port) for _ in range(4)]  # established under the old policy
    failures: list[str] = []
    stop = threading.Event()

    def talk(tls: ssl.SSLSocket, n: int) -> None:
        while not stop.is_set():
            payload = f"in-flight {n} {time.monotonic()}".encode()
            try:
                tls.sendall(payload)
                if _read_exactly(tls, len(payload)) != payload:
                    failures.append(f"connection {n}: echo mismatch")
                    return
            except OSError as exc:
                failures.append(f"connection {n}: {exc}")
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=talk, args=(t, n), daemon=True) for n, t in enumerate(held)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    sc.write_policy(ALLOW_INTRUDER)
    took = _eventually(lambda: peers["intruder"].echo(sc.port), 3, "the intruder let in by the new policy")
    assert not peers["frontend"].echo(sc.port), "the new policy must refuse new frontend connections"
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(5)
    for tls in held:
        tls.close()
    assert not failures, failures
    assert took < 1.0, f"the new policy took {took:.2f}s"
    assert sc.get_json("/ready")["policy"]["stale"] is False


@pytest.mark.parametrize("bad, where", [
    ("policies:\n  api: [\n", "YAML syntax error"),
    (json.dumps({"policies": {"api": [{"name": "r", "allow": [INTRUDER], "colour": "red"}]}}), "colour"),
    (json.dumps({"policies": {"api": [{"name": "r", "allow": ["spiffe://Example.org/x"]}]}}), "allow"),
], ids=["syntax-error", "unknown-key", "invalid-spiffe-id-pattern"])
def test_bad_policy_is_rejected_and_the_old_one_keeps_enforcing(ops: Any, bad: str, where: str) -> None:
    sc, peers = ops
    rejected = sc.metric("spiffe_sidecar_policy_reloads_total", result="rejected")
    sc.write_policy(bad)
    _eventually(lambda: sc.metric("spiffe_sidecar_policy_reloads_total", result="rejected") > rejected, 3,
                "the rejected reload counted")
    ready = sc.get_json("/ready")
    error = ready["policy"]["error"]
    assert re.search(rf"{re.escape(str(sc.policy_path))}:\d+: ", error) and where in error, error
    assert ready["ready"] is True  # still serving, with the last good policy
    assert sc.metric("spiffe_sidecar_policy_stale") == 1
    assert "rejected, the previous policy keeps enforcing" in sc.log()
    assert peers["frontend"].echo(sc.port) and not peers["intruder"].echo(sc.port)


def test_sighup_reloads_the_policy(ops: Any) -> None:
    sc, peers = ops
    reloads = sc.metric("spiffe_sidecar_policy_reloads_total", result="ok")
    sc.signal(signal.SIGHUP)
    _eventually(lambda: sc.metric("spiffe_sidecar_policy_reloads_total", result="ok") > reloads, 3, "SIGHUP reload")
    assert "reload (SIGHUP)" in sc.log()


def test_a_reloaded_config_points_the_listener_at_another_policy(ops: Any) -> None:
    sc, peers = ops
    sc.write_policy(json.dumps({"policies": {"api": [{"name": "frontend-only", "allow": [FRONTEND]}],
                                             "other": [{"name": "intruder-only", "allow": [INTRUDER]}]}}))

    def use(policy: str) -> Any:
        return lambda doc: doc["inbound"][0].update(policy=policy)

    try:
        sc.edit_config(use("other"))
        took = _eventually(lambda: peers["intruder"].echo(sc.port), 3, "the listener uses policy 'other'")
        assert took < 1.0 and not peers["frontend"].echo(sc.port)
        assert sc.get_json("/config")["inbound"][0]["policy"] == "other"
        sc.edit_config(lambda doc: doc["inbound"][0].update(listen="127.0.0.1:1"))
        _eventually(lambda: "need a restart" in sc.log(), 3, "a restart-only change is named")
        assert "inbound" in [line for line in sc.log().splitlines() if "need a restart" in line][-1]
    finally:
        sc.edit_config(lambda doc: doc["inbound"][0].update(policy="api", listen=f"127.0.0.1:{sc.port}"))
        _eventually(lambda: peers["frontend"].echo(sc.port), 3, "back on policy 'api'")
