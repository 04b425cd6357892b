"""A reload that also changes a restart-only field applies every reloadable part; the bound listeners stay."""

from __future__ import annotations

from pathlib import Path

from proxy.config.load import load_sidecar
from proxy.operations.reload import Reloader
from proxy.sidecar import Sidecar

PEER = "spiffe://example.org/frontend"


def _write(tmp_path: Path, *, policy: str, runtime: str = "trio", policy_file: str = "policy.yaml") -> Path:
    (tmp_path / policy_file).write_text(f"policies:\n  {policy}:\n    - name: allow-frontend\n      allow: [{PEER}]\n")
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        "identity: {files: {cert: c.pem, key: k.pem, bundle: b.pem}}\n"
        f"runtime: {runtime}\n"
        f"policy_file: {policy_file}\n"
        "inbound:\n  - name: api\n    listen: 127.0.0.1:18443\n    forward_to: 127.0.0.1:9\n"
        f"    policy: {policy}\n")
    return config


def _sidecar(tmp_path: Path) -> tuple[Sidecar, Reloader]:
    sidecar = Sidecar(*load_sidecar(_write(tmp_path, policy="a")), emit=lambda record: None)
    return sidecar, Reloader(sidecar)


def test_a_policy_rename_with_a_restart_only_change_applies_the_rename(tmp_path: Path) -> None:
    sidecar, reloader = _sidecar(tmp_path)
    _write(tmp_path, policy="b", runtime="uvloop")
    assert reloader.reload() is True
    assert not reloader.status.stale
    assert sidecar.live.inbound["api"].policy == "b" and sidecar.config.runtime.value == "trio"
    assert sidecar.policies is not None and sidecar.policies.evaluate("b", PEER).allowed


def test_a_removed_listener_still_bound_must_keep_its_policy_or_the_save_is_rejected(tmp_path: Path) -> None:
    sidecar, reloader = _sidecar(tmp_path)
    config = _write(tmp_path, policy="b")
    text = config.read_text()
    config.write_text(text[:text.index("inbound:")] + "inbound:\n  - name: other\n    listen: 127.0.0.1:18444\n"
                      "    forward_to: 127.0.0.1:9\n    policy: b\n")
    assert reloader.reload() is False
    assert reloader.status.stale and "no policy 'a'" in (reloader.status.error or "")
    assert "restart" in (reloader.status.error or "")
    assert sidecar.policies is not None and "a" in sidecar.policies
    assert sidecar.live.inbound["api"].policy == "a"


def test_a_new_policy_file_needs_a_restart_and_is_not_applied(tmp_path: Path) -> None:
    sidecar, reloader = _sidecar(tmp_path)
    old = sidecar.policies
    _write(tmp_path, policy="a", policy_file="other.yaml")
    (tmp_path / "other.yaml").write_text("policies:\n  a:\n    - name: nobody\n      allow: [spiffe://example.org/x]\n")
    assert reloader.reload() is False
    assert reloader.status.stale and "restart" in (reloader.status.error or "")
    assert sidecar.policies is old
    assert sidecar.policies is not None and sidecar.policies.evaluate("a", PEER).allowed


def test_a_restart_only_change_with_fitting_policies_still_applies_them(tmp_path: Path) -> None:
    sidecar, reloader = _sidecar(tmp_path)
    _write(tmp_path, policy="a", runtime="uvloop")
    (tmp_path / "policy.yaml").write_text("policies:\n  a:\n    - name: nobody\n      allow: [spiffe://example.org/x]\n")
    assert reloader.reload() is True
    assert not reloader.status.stale
    assert sidecar.policies is not None and not sidecar.policies.evaluate("a", PEER).allowed


def test_a_listener_added_with_a_limit_change_applies_the_limit_and_waits_for_a_restart(tmp_path: Path) -> None:
    sidecar, reloader = _sidecar(tmp_path)
    config = _write(tmp_path, policy="a")
    config.write_text(config.read_text() + "    limits: {idle_timeout: 7s}\n"
                      "  - name: added\n    listen: 127.0.0.1:18445\n    forward_to: 127.0.0.1:9\n    policy: a\n")
    assert reloader.reload() is True
    assert [x.name for x in sidecar.config.inbound] == ["api"]  # not bound: it needs a restart
    assert sidecar.live.inbound["api"].limits.idle_timeout == 7.0
    assert sidecar.live.inbound_specs["api"].idle_timeout == 7.0
