"""A reload publishes the policy set and the listeners it names together.

The reload runs on its own thread while listeners accept. A reload that
renames a listener's policy in sidecar.yaml and in policy.yaml at once must
never let a new connection see the new listener with the old policy set (or
the reverse): that would deny an allowed peer with `no_policy`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from proxy.config.load import load_sidecar_config_text
from proxy.policy.load import load_policy_text
from proxy.sidecar import Sidecar
from support.net import free_port

PEER = "spiffe://example.org/frontend"


def _version(tmp_path: Path, name: str, port: int):  # type: ignore[no-untyped-def]
    policy_text = f"policies:\n  {name}:\n    - name: allow-frontend\n      allow: [{PEER}]\n"
    policy_file = tmp_path / f"policy-{name}.yaml"
    policy_file.write_text(policy_text)
    config = load_sidecar_config_text(
        "identity: {files: {cert: c.pem, key: k.pem, bundle: b.pem}}\n"
        f"policy_file: {policy_file.name}\n"
        f"inbound:\n  - name: api\n    listen: 127.0.0.1:{port}\n    forward_to: 127.0.0.1:9\n"
        f"    policy: {name}\n",
        str(tmp_path / "sidecar.yaml"), check_policies=False)
    return config, load_policy_text(policy_text, str(policy_file))


def test_a_reload_renaming_a_policy_never_exposes_half_of_itself(tmp_path: Path) -> None:
    port = free_port()
    (config_a, policies_a), (config_b, policies_b) = _version(tmp_path, "a", port), _version(tmp_path, "b", port)
    sidecar = Sidecar(config_a, policies_a, emit=lambda record: None)
    plan = sidecar._inbound_plan(config_a.inbound[0])
    stop = threading.Event()

    def reload_back_and_forth() -> None:
        while not stop.is_set():
            sidecar.apply_reload(policies_b, config_b)
            sidecar.apply_reload(policies_a, config_a)

    reloader = threading.Thread(target=reload_back_and_forth)
    reloader.start()
    denials, checked, deadline = [], 0, time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline and checked < 200_000:
            decision = plan.spec(None).authorize(PEER)
            checked += 1
            if not decision.allowed:
                denials.append(decision)
    finally:
        stop.set()
        reloader.join(5)
        plan.sock.close()
    assert checked > 1000
    assert denials == [], f"{len(denials)} of {checked} connections saw half a reload: {denials[0]}"


def test_policy_explain_reads_the_listeners_and_the_policy_set_of_one_reload(tmp_path: Path) -> None:
    """/policy/explain must not pair the old listener's policy name with the new policy set."""
    from proxy.operations.admin import explain
    from proxy.operations.live import LiveSettings

    port = free_port()
    (config_a, policies_a), (config_b, policies_b) = _version(tmp_path, "a", port), _version(tmp_path, "b", port)
    old, new = LiveSettings.build(config_a, policies_a), LiveSettings.build(config_b, policies_b)

    class ReloadedMidRequest:
        """A reload lands between two reads of the live reference."""

        def __init__(self) -> None:
            self.live = old

        @property
        def config(self):  # type: ignore[no-untyped-def]
            live, self.live = self.live, new
            return live.config

        @property
        def policies(self):  # type: ignore[no-untyped-def]
            return self.live.policies

    status, body = explain(ReloadedMidRequest(), "api", PEER)  # type: ignore[arg-type]
    assert status == 200 and body["allowed"] is True, body
