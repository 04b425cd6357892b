"""Re-authentication of a relaying peer, pure: when to ask, what the answer does (issue 11.2)."""

from __future__ import annotations

import json

import pytest

from proxy.connection import events as ev
from proxy.connection.actions import Close, LogReauth, RearmRelay, StartRelay
from dataclasses import dataclass

from proxy.connection.machine import Connection, ConnectionSpec, ConnectionState, Direction
from proxy.connection.reauth import MIN_INTERVAL, PeerExpiry, ReauthOutcome, next_reauth
from proxy.errors import CloseReason, DenyReason, Verdict, VerifyFailure

FRONTEND = "spiffe://example.org/frontend"
BATCH = "spiffe://example.org/batch"


@dataclass(frozen=True)
class FakeDecision:
    allowed: bool
    rule: str | None
    reason: DenyReason | None
    explanation: str = ""


def allow_frontend(peer: str) -> FakeDecision:
    if peer == FRONTEND:
        return FakeDecision(True, "frontend-reads", None, "allowed by frontend-reads")
    return FakeDecision(False, None, DenyReason.NO_MATCHING_RULE, f"{peer}: no rule matches")


def spec(direction: Direction = Direction.INBOUND, **kw: object) -> ConnectionSpec:
    base: dict[str, object] = dict(listener="api", direction=direction, upstream_host="127.0.0.1",
                                   upstream_port=8080, authorize=allow_frontend, idle_timeout=60.0)
    base.update(kw)
    return ConnectionSpec(**base)  # type: ignore[arg-type]


def deny_all(peer: str) -> FakeDecision:
    return FakeDecision(False, None, DenyReason.NO_MATCHING_RULE, f"{peer}: no rule matches")


def relaying(expiry: PeerExpiry | None = None, *, version: str = "TLSv1.3", direction: Direction = Direction.INBOUND,
             not_after: float = 1300.0) -> tuple[Connection, StartRelay]:
    conn = Connection(spec(direction, max_lifetime=None, peer_expiry=expiry), now=1000.0)
    conn.start(1000.0, ready=True, active=0)
    done = ev.HandshakeCompleted(1000.0, FRONTEND, not_after, version, "TLS_AES_128_GCM_SHA256", False)
    if direction is Direction.OUTBOUND:
        conn.handle(ev.UpstreamConnected(1000.0))
        actions = conn.handle(done)
    else:
        conn.handle(done)
        actions = conn.handle(ev.UpstreamConnected(1000.0))
    relay = actions[-1]
    assert isinstance(relay, StartRelay) and conn.state is ConnectionState.RELAYING
    return conn, relay


def test_inbound_asks_halfway_to_the_peers_not_after_and_still_closes_at_it_without_an_answer() -> None:
    conn, relay = relaying()
    assert relay.reauth_at == 1150.0
    assert (relay.lifetime_deadline, relay.lifetime_kind) == (1300.0, ev.DeadlineKind.PEER_CERT_EXPIRED)


def test_a_renewed_certificate_allowed_by_the_current_policy_moves_the_deadline_and_is_logged() -> None:
    conn, _ = relaying()
    log, rearm = conn.handle(ev.PeerReauthenticated(1150.0, FRONTEND, 1600.0, allow_frontend))
    assert isinstance(log, LogReauth) and log.record.outcome is ReauthOutcome.RENEWED
    assert (log.record.peer_id, log.record.previous_peer_id, log.record.not_after) == (FRONTEND, FRONTEND, 1600.0)
    assert json.loads(log.record.to_json())["event"] == "reauthentication"
    assert rearm == RearmRelay(1600.0, ev.DeadlineKind.PEER_CERT_EXPIRED, 1375.0)
    assert conn.state is ConnectionState.RELAYING


def test_the_same_certificate_again_is_asked_again_later_until_too_late() -> None:
    conn, _ = relaying()
    log, rearm = conn.handle(ev.PeerReauthenticated(1150.0, FRONTEND, 1300.0, allow_frontend))
    assert isinstance(log, LogReauth) and log.record.outcome is ReauthOutcome.UNCHANGED
    assert isinstance(rearm, RearmRelay) and rearm.reauth_at == 1225.0 and rearm.lifetime_deadline == 1300.0
    assert next_reauth(1299.0, 1300.0) is None and next_reauth(1290.0, 1300.0) == 1295.0
    assert next_reauth(1297.0, 1300.0) == 1297.0 + max(MIN_INTERVAL, 1.5)


def test_a_peer_the_current_policy_denies_is_closed_as_denied_with_a_clear_reason() -> None:
    conn, _ = relaying()
    log, close = conn.handle(ev.PeerReauthenticated(1150.0, BATCH, 1600.0, deny_all))
    assert isinstance(log, LogReauth) and log.record.outcome is ReauthOutcome.DENIED
    assert log.record.reason == "no_matching_rule" and log.record.peer_id == BATCH
    assert isinstance(close, Close) and close.reason is CloseReason.DENIED and close.abort
    assert "re-authentication" in close.detail and "current policy" in close.detail
    (record,) = conn.handle(ev.Closed(1151.0))
    assert record.record.decision is Verdict.DENY and record.record.close_reason is CloseReason.DENIED  # type: ignore[attr-defined]


def test_a_failed_re_authentication_closes_with_its_own_reason() -> None:
    conn, _ = relaying()
    log, close = conn.handle(ev.ReauthFailed(1150.0, VerifyFailure.UNTRUSTED_CHAIN, "spiffe://x/y: no path to a trusted root"))
    assert isinstance(log, LogReauth) and log.record.outcome is ReauthOutcome.FAILED
    assert isinstance(close, Close) and close.reason is CloseReason.REAUTH_FAILED and close.abort


def test_a_peer_that_cannot_be_asked_is_logged_and_kept_until_its_not_after() -> None:
    conn, _ = relaying()
    (log,) = conn.handle(ev.ReauthUnsupported(1150.0, "the peer did not offer post-handshake authentication"))
    assert isinstance(log, LogReauth) and log.record.outcome is ReauthOutcome.UNSUPPORTED
    assert conn.state is ConnectionState.RELAYING


def test_a_tls12_peer_is_logged_as_unsupported_and_closed_at_its_not_after() -> None:
    conn = Connection(spec(max_lifetime=None), now=1000.0)
    conn.start(1000.0, ready=True, active=0)
    conn.handle(ev.HandshakeCompleted(1000.0, FRONTEND, 1300.0, "TLSv1.2", "ECDHE", False))
    log, relay = conn.handle(ev.UpstreamConnected(1000.0))
    assert isinstance(log, LogReauth) and log.record.outcome is ReauthOutcome.UNSUPPORTED
    assert "TLSv1.2" in log.record.detail
    assert isinstance(relay, StartRelay) and relay.reauth_at is None and relay.lifetime_deadline == 1300.0


@pytest.mark.parametrize(("expiry", "deadline", "reauth_at"), [
    (PeerExpiry.CLOSE, 1300.0, None), (PeerExpiry.KEEP, None, None), (None, 1300.0, 1150.0)])
def test_inbound_peer_expiry_modes(expiry: PeerExpiry | None, deadline: float | None, reauth_at: float | None) -> None:
    _, relay = relaying(expiry)
    assert (relay.lifetime_deadline, relay.reauth_at) == (deadline, reauth_at)


@pytest.mark.parametrize(("expiry", "deadline"), [(None, None), (PeerExpiry.KEEP, None), (PeerExpiry.CLOSE, 1300.0)])
def test_outbound_never_asks_and_keeps_unless_told_to_close(expiry: PeerExpiry | None, deadline: float | None) -> None:
    _, relay = relaying(expiry, direction=Direction.OUTBOUND)
    assert relay.reauth_at is None and relay.lifetime_deadline == deadline
