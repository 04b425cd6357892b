"""The access log's two formats and the metrics' bounded labels, fed real connection records.

The writer is a real process whose stdout is a real pseudo-terminal
(``pty.openpty``) or a real pipe: ``format: auto`` must tell them apart.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxy.operations.accesslog import format_text
from proxy.connection.close import ConnectionRecord
from proxy.connection.machine import Direction
from proxy.errors import CloseReason, DenyReason, Verdict
from proxy.identity.store import IdentityStore
from proxy.operations.metrics import Metrics

REPO = Path(__file__).resolve().parents[3]
RECORD = ConnectionRecord(listener="api", direction=Direction.INBOUND, peer_id="spiffe://example.org/frontend",
                          decision=Verdict.ALLOW, rule="frontend-only", reason=None, detail="", bytes_in=120,
                          bytes_out=340, duration=0.0123, close_reason=CloseReason.COMPLETED,
                          tls_version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", resumed=False, start=0.0)


_WRITE_ONE = """
from proxy.operations.accesslog import open_sink
from proxy.config.model import LogFormat
from proxy.connection.close import ConnectionRecord
from proxy.connection.machine import Direction
from proxy.errors import CloseReason, Verdict
record = ConnectionRecord(**{**RECORD, "close_reason": CloseReason(RECORD["close_reason"]),
                             "direction": Direction(RECORD["direction"]), "decision": Verdict(RECORD["decision"])})
open_sink("stdout", LogFormat(FORMAT))(record)
"""


def _write_one_from_a_process(fmt: str, *, tty: bool) -> str:
    """Run a process whose stdout is a real pty or a real pipe; return what it wrote for RECORD."""
    read_fd, write_fd = pty.openpty() if tty else os.pipe()
    data = json.loads(RECORD.to_json())
    del data["event"]
    code = f"RECORD = {data!r}\nFORMAT = {fmt!r}\n" + _WRITE_ONE
    try:
        subprocess.run([sys.executable, "-c", code], stdout=write_fd, check=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        os.close(write_fd)
        write_fd = -1
        return os.read(read_fd, 65536).decode()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_access_log_is_text_when_stdout_is_a_terminal() -> None:
    line = _write_one_from_a_process("auto", tty=True)
    assert not line.startswith("{")
    for part in ("api", "inbound", "spiffe://example.org/frontend", "allow (frontend-only)", "completed",
                 "in=120B", "out=340B", "TLSv1.3"):
        assert part in line, line


def test_access_log_is_one_json_line_when_stdout_is_not_a_terminal() -> None:
    data = json.loads(_write_one_from_a_process("auto", tty=False))
    assert data["event"] == "connection" and data["close_reason"] == "completed" and data["bytes_out"] == 340


def test_access_log_format_text_is_honoured_on_a_pipe() -> None:
    assert _write_one_from_a_process("text", tty=False) == format_text(RECORD) + "\n"


def test_metric_labels_come_only_from_reason_enums_and_config_names() -> None:
    metrics = Metrics(IdentityStore())
    weird = ConnectionRecord(listener="api", direction=Direction.INBOUND, peer_id="spiffe://example.org/x",
                             decision=Verdict.DENY, rule=None, reason=DenyReason.NO_MATCHING_RULE,
                             detail="something a peer said", bytes_in=0, bytes_out=0,
                             duration=0.1, close_reason=CloseReason.DENIED, tls_version="TLSv1.3", cipher=None,
                             resumed=False, start=0.0, audit_denies=("audit-x",))
    metrics.observe(weird)
    metrics.observe(RECORD)
    samples = [s for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples]
    labels = {v for s in samples for v in s.labels.values()}
    assert "no_matching_rule" in labels and "something a peer said" not in labels
    assert not any(v.startswith("spiffe://") for v in labels)
    decisions = {(s.labels["decision"], s.labels["rule"]): s.value for s in samples
                 if s.name == "spiffe_sidecar_authz_decisions_total"}
    assert decisions == {("deny", ""): 1.0, ("allow", "frontend-only"): 1.0}
    audit = [s for s in samples if s.name == "spiffe_sidecar_authz_audit_would_deny_total"]
    assert [(s.labels["rule"], s.value) for s in audit] == [("audit-x", 1.0)]


def test_peer_ids_become_labels_only_on_their_own_metric_when_enabled() -> None:
    metrics = Metrics(IdentityStore(), peer_id_labels=True)
    metrics.observe(RECORD)
    samples = [s for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples]
    with_peer = {s.name for s in samples if any(v.startswith("spiffe://") for v in s.labels.values())
                 and s.name.endswith("_total")}
    assert with_peer == {"spiffe_sidecar_authz_decisions_by_peer_total"}


def test_peer_id_labels_are_off_unless_the_admin_section_opts_in(tmp_path: Path) -> None:
    from proxy.config.load import load_sidecar_config_text

    base = "identity: {workload_api: unix:///tmp/agent.sock}\nadmin: {listen: 127.0.0.1:15000"
    off = load_sidecar_config_text(base + "}\n", str(tmp_path / "s.yaml"))
    on = load_sidecar_config_text(base + ", peer_id_labels: true}\n", str(tmp_path / "s.yaml"))
    assert off.admin is not None and not off.admin.peer_id_labels
    assert on.admin is not None and on.admin.peer_id_labels


def test_a_transparent_connections_original_port_is_in_the_log_not_in_the_listener_label() -> None:
    from dataclasses import replace

    record = replace(RECORD, listener="transparent-inbound", original_port=8080)
    assert " transparent-inbound:8080 inbound " in format_text(record)
    data = json.loads(record.to_json())
    assert data["listener"] == "transparent-inbound" and data["original_port"] == 8080
    metrics = Metrics(IdentityStore())
    metrics.observe(record)
    labels = {s.labels.get("listener") for f in text_string_to_metric_families(metrics.render().decode())
              for s in f.samples if "listener" in s.labels}
    assert labels == {"transparent-inbound"}
