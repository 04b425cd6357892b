"""Re-authentication records in the access log: one JSON line or one readable line, beside connection records."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.operations.accesslog import format_reauth_text, open_sinks
from proxy.config.model import LogFormat
from proxy.connection.close import ConnectionRecord
from proxy.connection.machine import Direction
from proxy.connection.reauth import ReauthOutcome, ReauthRecord
from proxy.errors import CloseReason

DENIED = ReauthRecord(listener="api", peer_id="spiffe://example.org/app", previous_peer_id="spiffe://example.org/app",
                      outcome=ReauthOutcome.DENIED, time=1_800_000_000.0, not_after=1_800_000_300.0,
                      reason="no_matching_rule", detail="re-authentication: not allowed by the current policy")


def test_a_reauthentication_is_one_json_line_with_its_own_event_name() -> None:
    data = json.loads(DENIED.to_json())
    assert data["event"] == "reauthentication" and data["outcome"] == "denied"
    assert (data["listener"], data["peer_id"], data["reason"]) == ("api", "spiffe://example.org/app", "no_matching_rule")


def test_the_text_form_says_who_what_and_why() -> None:
    line = format_reauth_text(DENIED)
    assert "api reauth spiffe://example.org/app denied reason=no_matching_rule" in line
    assert line.endswith("- re-authentication: not allowed by the current policy")


def test_both_kinds_of_record_go_to_the_same_access_log(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    connections, reauths = open_sinks(str(path), LogFormat.JSON)
    reauths(DENIED)
    connections(ConnectionRecord(listener="api", direction=Direction.INBOUND, peer_id=None, decision=None, rule=None,
                                 reason=None, detail="", bytes_in=0, bytes_out=0, duration=0.0,
                                 close_reason=CloseReason.COMPLETED, tls_version=None, cipher=None, resumed=False,
                                 start=0.0))
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert events == ["reauthentication", "connection"]
