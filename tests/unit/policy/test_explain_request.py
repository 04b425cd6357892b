"""`policy explain --method --path` as a user runs it (a real process): a request's decision and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
POLICY = """policies:
  api:
    - name: no-admin
      deny: ["spiffe://example.org/**"]
      http: {paths: ["/admin/**"]}
    - name: frontend-reads
      allow: [spiffe://example.org/frontend]
      http: {methods: [GET, HEAD], paths: ["/v1/orders/*"]}
"""


def explain(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return subprocess.run([sys.executable, "-m", "proxy", "policy", "explain", "--policy-file", str(policy),
                           "--listener", "api", "--peer", "spiffe://example.org/frontend", *args],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=60)


def test_explain_allows_a_request_the_rules_allow(tmp_path: Path) -> None:
    out = explain(tmp_path, "--method", "GET", "--path", "/v1/orders/7")
    assert out.returncode == 0, out.stderr
    assert "request:   GET /v1/orders/7" in out.stdout and "frontend-reads" in out.stdout


def test_explain_normalizes_the_path_as_the_data_path_does(tmp_path: Path) -> None:
    out = explain(tmp_path, "--path", "/./%61dmin/x", "--json")
    decision = json.loads(out.stdout)
    assert out.returncode != 0
    assert (decision["allowed"], decision["rule"], decision["request"]) == (False, "no-admin", "GET /admin/x")


def test_explain_a_method_no_rule_allows(tmp_path: Path) -> None:
    out = explain(tmp_path, "--method", "POST", "--path", "/v1/orders/7", "--json")
    assert json.loads(out.stdout)["reason"] == "no_matching_rule" and out.returncode != 0


def test_explain_refuses_a_path_the_data_path_refuses(tmp_path: Path) -> None:
    out = explain(tmp_path, "--path", "/v1/a%2Fb")
    assert out.returncode != 0 and "refused before any policy (400)" in out.stderr


def test_explain_without_a_request_keeps_the_connection_answer(tmp_path: Path) -> None:
    out = explain(tmp_path, "--json")
    # Only request rules name the frontend: a TCP listener could not check them, so the connection is denied.
    assert json.loads(out.stdout)["allowed"] is False and "request" not in json.loads(out.stdout)
