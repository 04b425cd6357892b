"""`spiffe-sidecar policy check|explain` as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from proxy.cli import main

Run = Callable[..., "subprocess.CompletedProcess[str]"]

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def spawn(*args: str) -> subprocess.CompletedProcess[str]:
    """A real `python -m proxy policy ...` process (exit codes as a shell sees them)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "proxy", "policy", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The same command in-process (a process per case would cost most of the suite's time)."""
    def call(*args: str) -> subprocess.CompletedProcess[str]:
        code = main(["policy", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["policy", *args], code, out, err)
    return call


def test_check_valid_file_exits_0_with_a_summary() -> None:
    res = spawn("check", str(EXAMPLES / "policy.yaml"))
    assert res.returncode == 0, res.stderr
    assert "OK: 2 policies" in res.stdout
    assert "no-batch (deny, audit" in res.stdout


def test_check_bad_file_exits_2_with_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("policies:\n  api:\n    - name: a\n      allow: ['spiffe://Example.org/x']\n")
    res = spawn("check", str(bad))
    assert res.returncode == 2
    assert f"{bad}:4: policies.api[0].allow[0]: Invalid SPIFFE ID 'spiffe://Example.org/x'" in res.stderr
    assert res.stdout == ""


def test_check_config_checks_the_policy_references(run: Run, tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("policies:\n  other: []\n")
    (tmp_path / "sidecar.yaml").write_text(
        "identity: {workload_api: unix:///tmp/a.sock}\npolicy_file: policy.yaml\ninbound:\n"
        "  - name: api\n    listen: 0.0.0.0:8443\n    forward_to: 127.0.0.1:8080\n    policy: api\n")
    res = run("check", "--config", str(tmp_path / "sidecar.yaml"))
    assert res.returncode == 2
    assert "sidecar.yaml:7: inbound[0].policy: no policy 'api'" in res.stderr  # the field's line, not the item's
    ok = run("check", "--config", str(EXAMPLES / "sidecar.yaml"))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("peer, code, words", [
    ("spiffe://example.org/frontend", 0, ["decision:  ALLOW", "rule:      frontend-reads"]),
    ("spiffe://example.org/quarantine/frontend", 3,
     ["decision:  DENY (reason: deny_rule)", "no-quarantine", "matched:   spiffe://example.org/quarantine/*"]),
    ("spiffe://example.org/batch", 3,
     ["reason: no_matching_rule", "audit:     would be denied by no-batch"]),
])
def test_explain_with_config_prints_decision_rule_and_why(run: Run, peer: str, code: int, words: list[str]) -> None:
    res = run("explain", "--config", str(EXAMPLES / "sidecar.yaml"), "--listener", "api", "--peer", peer)
    assert res.returncode == code, res.stderr
    for w in words:
        assert w in res.stdout
    assert "why:" in res.stdout


def test_explain_with_policy_file_as_json(run: Run) -> None:
    res = run("explain", "--policy-file", str(EXAMPLES / "policy.yaml"), "--listener", "backend",
              "--peer", "spiffe://example.org/frontend", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["allowed"] is True and out["rule"] == "frontend-only" and out["audit_denies"] == []


def test_explain_outbound_listener_tests_expect(run: Run) -> None:
    res = run("explain", "-c", str(EXAMPLES / "sidecar.yaml"), "--listener", "payments",
              "--peer", "spiffe://example.org/ns/prod/sa/other")
    assert res.returncode == 3 and "refuses upstream" in res.stdout


def test_explain_rejects_an_invalid_peer_id(run: Run) -> None:
    res = run("explain", "--policy-file", str(EXAMPLES / "policy.yaml"), "--listener", "api",
              "--peer", "spiffe://Example.org/x")
    assert res.returncode == 2 and "trust domain characters" in res.stderr


def test_explain_unknown_listener(run: Run) -> None:
    res = run("explain", "-c", str(EXAMPLES / "sidecar.yaml"), "--listener", "nope",
              "--peer", "spiffe://example.org/x")
    assert res.returncode == 2 and "no listener 'nope'" in res.stderr and "api" in res.stderr


def test_check_warns_about_a_shadowed_allow_and_strict_fails(run: Run, tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("policies:\n  p:\n    - {name: a, allow: [spiffe://e.org/x]}\n"
                 "    - {name: d, deny: ['spiffe://e.org/**']}\n")
    res = run("check", str(f))
    assert res.returncode == 0 and "warning:" in res.stdout and "can never grant" in res.stdout
    assert run("check", "--strict", str(f)).returncode == 1
    assert "warning" not in run("check", str(EXAMPLES / "policy.yaml")).stdout
