"""The connection state machine, pure: events in, actions and records out."""

from __future__ import annotations

import ast
import pathlib
from dataclasses import dataclass

import pytest

from proxy.connection import events as ev
from proxy.connection.actions import Close, ConnectUpstream, Log, StartHandshake, StartRelay
from proxy.connection.connect import is_loopback
from proxy.connection.handshake import handshake_failed
from proxy.connection.reauth import PeerExpiry
from proxy.connection.machine import (
    Connection,
    ConnectionSpec,
    ConnectionState,
    Direction,
    InvalidTransition,
    INBOUND_TRANSITIONS,
    OUTBOUND_TRANSITIONS,
)
from proxy.connection.verify import check_expected_peer
from proxy.errors import CloseReason, DenyReason, HandshakeFailure, TlsError, Verdict, VerificationError, VerifyFailure

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
                                   upstream_port=8080, authorize=allow_frontend, handshake_timeout=10.0,
                                   connect_timeout=5.0, idle_timeout=60.0, max_lifetime=3600.0,
                                   max_connections=100)
    base.update(kw)
    return ConnectionSpec(**base)  # type: ignore[arg-type]


def completed(now: float, peer: str = FRONTEND, not_after: float = 10_000.0) -> ev.HandshakeCompleted:
    return ev.HandshakeCompleted(now, peer, not_after, "TLSv1.3", "TLS_AES_128_GCM_SHA256", False)


def close_with_log(conn: Connection, now: float, tin: int = 0, tout: int = 0) -> ev.Event:
    (log,) = conn.handle(ev.Closed(now, tin, tout))
    assert isinstance(log, Log)
    assert conn.state is ConnectionState.CLOSED
    return log.record  # type: ignore[return-value]


def test_inbound_happy_path_walks_every_state_and_records_the_decision() -> None:
    conn = Connection(spec(), now=1000.0)
    assert conn.start(1000.0, ready=True, active=0) == [StartHandshake(deadline=1010.0)]
    assert conn.state is ConnectionState.HANDSHAKING
    assert conn.handle(completed(1001.0)) == [ConnectUpstream("127.0.0.1", 8080, 1006.0)]
    assert conn.state is ConnectionState.AUTHORIZED
    (relay,) = conn.handle(ev.UpstreamConnected(1001.5))
    assert isinstance(relay, StartRelay) and relay.idle_timeout == 60.0
    assert conn.state is ConnectionState.RELAYING
    assert conn.handle(ev.DirectionFinished(1002.0, ev.RelayDirection.PLAIN_TO_TLS)) == []
    assert conn.handle(ev.DirectionFinished(1003.0, ev.RelayDirection.TLS_TO_PLAIN)) == [
        Close(CloseReason.COMPLETED)]
    record = close_with_log(conn, 1004.0, 10, 20)
    assert record.peer_id == FRONTEND and record.decision is Verdict.ALLOW and record.rule == "frontend-reads"
    assert (record.bytes_in, record.bytes_out, record.duration) == (10, 20, 4.0)
    assert record.close_reason is CloseReason.COMPLETED and record.tls_version == "TLSv1.3"


def test_inbound_denies_before_connecting_to_the_app() -> None:
    conn = Connection(spec(), now=0.0)
    conn.start(0.0, ready=True, active=0)
    (close,) = conn.handle(completed(1.0, BATCH))
    assert isinstance(close, Close) and close.reason is CloseReason.DENIED
    record = close_with_log(conn, 2.0)
    assert (record.decision, record.reason, record.peer_id) == (Verdict.DENY, DenyReason.NO_MATCHING_RULE, BATCH)


def test_not_ready_fails_closed_at_once() -> None:
    conn = Connection(spec(), now=0.0)
    assert conn.start(0.0, ready=False, active=0)[0].reason is CloseReason.NOT_READY  # type: ignore[attr-defined]
    assert conn.state is ConnectionState.CLOSING


def test_beyond_max_connections_is_refused_as_overloaded() -> None:
    conn = Connection(spec(max_connections=2), now=0.0)
    (close,) = conn.start(0.0, ready=True, active=2)
    assert isinstance(close, Close) and close.reason is CloseReason.OVERLOADED


@pytest.mark.parametrize("exc, close_reason, reason", [
    (VerificationError(VerifyFailure.UNTRUSTED_CHAIN, "x"), CloseReason.VERIFY_FAILED, "untrusted_chain"),
    (TlsError(HandshakeFailure.NO_CLIENT_CERT, "no cert"), CloseReason.VERIFY_FAILED, "no_client_cert"),
    (TlsError(HandshakeFailure.NOT_TLS, "garbage"), CloseReason.HANDSHAKE_FAILED, "not_tls"),
    (ConnectionResetError(104, "reset"), CloseReason.HANDSHAKE_FAILED, "peer_closed"),
])
def test_handshake_failures_close_with_a_reason(exc: BaseException, close_reason: CloseReason, reason: str) -> None:
    conn = Connection(spec(), now=0.0)
    conn.start(0.0, ready=True, active=0)
    (close,) = conn.handle(handshake_failed(1.0, exc))
    assert isinstance(close, Close) and close.reason is close_reason
    assert close_with_log(conn, 1.0).reason.value == reason  # type: ignore[attr-defined]


def test_handshake_deadline_expiry_is_a_handshake_failure() -> None:
    conn = Connection(spec(), now=0.0)
    conn.start(0.0, ready=True, active=0)
    (close,) = conn.handle(ev.DeadlineExpired(10.0, ev.DeadlineKind.HANDSHAKE))
    assert isinstance(close, Close) and close.reason is CloseReason.HANDSHAKE_FAILED


def test_lifetime_is_bounded_by_the_earlier_of_peer_not_after_and_max_lifetime() -> None:
    conn = Connection(spec(max_lifetime=3600.0, peer_expiry=PeerExpiry.CLOSE), now=0.0)
    conn.start(0.0, ready=True, active=0)
    conn.handle(completed(1.0, not_after=120.0))
    (relay,) = conn.handle(ev.UpstreamConnected(1.0))
    assert relay == StartRelay(60.0, 120.0, ev.DeadlineKind.PEER_CERT_EXPIRED)
    conn2 = Connection(spec(max_lifetime=30.0, peer_expiry=PeerExpiry.CLOSE), now=0.0)
    conn2.start(0.0, ready=True, active=0)
    conn2.handle(completed(1.0, not_after=120.0))
    assert conn2.handle(ev.UpstreamConnected(1.0)) == [StartRelay(60.0, 30.0, ev.DeadlineKind.MAX_LIFETIME)]
    (close,) = conn2.handle(ev.DeadlineExpired(30.0, ev.DeadlineKind.MAX_LIFETIME))
    assert isinstance(close, Close) and close.reason is CloseReason.MAX_LIFETIME


def test_outbound_connects_first_then_requires_the_expected_peer() -> None:
    class Exact:
        def matches(self, spiffe_id: str) -> bool:
            return spiffe_id == "spiffe://example.org/backend"

        def describe(self) -> str:
            return "spiffe://example.org/backend"

    s = spec(Direction.OUTBOUND, listener="backend",
             authorize=lambda peer: check_expected_peer(peer, Exact(), "backend"))
    conn = Connection(s, now=0.0)
    assert conn.start(0.0, ready=True, active=0) == [ConnectUpstream("127.0.0.1", 8080, 5.0)]
    assert conn.handle(ev.UpstreamConnected(0.5)) == [StartHandshake(deadline=10.5)]
    (close,) = conn.handle(completed(1.0, "spiffe://example.org/impostor"))
    assert isinstance(close, Close) and close.reason is CloseReason.DENIED
    assert close_with_log(conn, 1.0).reason is DenyReason.UNEXPECTED_PEER  # type: ignore[attr-defined]
    ok = Connection(s, now=0.0)
    ok.start(0.0, ready=True, active=0)
    ok.handle(ev.UpstreamConnected(0.5))
    (relay,) = ok.handle(completed(1.0, "spiffe://example.org/backend"))
    assert isinstance(relay, StartRelay) and ok.state is ConnectionState.RELAYING


def test_late_events_after_close_are_ignored_and_events_after_closed_are_bugs() -> None:
    conn = Connection(spec(), now=0.0)
    conn.start(0.0, ready=True, active=0)
    conn.handle(ev.StopRequested(1.0))
    assert conn.handle(ev.DeadlineExpired(2.0, ev.DeadlineKind.HANDSHAKE)) == []
    close_with_log(conn, 3.0)
    with pytest.raises(InvalidTransition):
        conn.handle(ev.StopRequested(4.0))


def test_upstream_failure_closes_with_the_target_in_the_detail() -> None:
    conn = Connection(spec(), now=0.0)
    conn.start(0.0, ready=True, active=0)
    conn.handle(completed(1.0))
    (close,) = conn.handle(ev.UpstreamFailed(1.5, "connection refused"))
    assert isinstance(close, Close) and close.reason is CloseReason.UPSTREAM_CONNECT_FAILED
    assert "127.0.0.1:8080" in close.detail


def test_every_table_state_is_reachable_and_every_close_path_reaches_closed() -> None:
    for table in (INBOUND_TRANSITIONS, OUTBOUND_TRANSITIONS):
        targets = {state for state in table.values()}
        assert ConnectionState.CLOSED in targets and ConnectionState.RELAYING in targets


def test_record_is_one_json_line() -> None:
    conn = Connection(spec(), now=0.0)
    conn.start(0.0, ready=False, active=0)
    line = close_with_log(conn, 0.0).to_json()  # type: ignore[attr-defined]
    assert "\n" not in line and '"close_reason":"not_ready"' in line


def test_loopback_means_this_host_without_name_lookups() -> None:
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.org")


def test_connection_core_does_no_io() -> None:
    forbidden = {"socket", "trio", "asyncio", "grpc", "time", "select", "selectors", "uvloop", "os"}
    root = pathlib.Path(__file__).resolve().parents[3] / "proxy" / "connection"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


CLIENT_HELLO_START = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])


def test_permissive_inbound_takes_the_mtls_path_for_a_client_hello() -> None:
    from proxy.connection.actions import PeekFirstBytes
    from proxy.connection.machine import Mode

    conn = Connection(spec(mode=Mode.SNIFF), now=0.0)
    (peek,) = conn.start(0.0, ready=True, active=0)
    assert isinstance(peek, PeekFirstBytes) and conn.state is ConnectionState.SNIFFING
    assert conn.handle(ev.FirstBytesPeeked(0.1, CLIENT_HELLO_START)) == [StartHandshake(deadline=10.0)]
    assert conn.handle(completed(0.2))[0] == ConnectUpstream("127.0.0.1", 8080, 5.2)


def test_permissive_inbound_keeps_the_accept_time_handshake_deadline_after_a_slow_sniff() -> None:
    """The peek and the handshake share one handshake_timeout: a slow ClientHello does not get a second one."""
    from proxy.connection.actions import PeekFirstBytes
    from proxy.connection.machine import Mode

    conn = Connection(spec(mode=Mode.SNIFF), now=100.0)
    (peek,) = conn.start(100.0, ready=True, active=0)
    assert isinstance(peek, PeekFirstBytes) and peek.deadline == 110.0
    assert conn.handle(ev.FirstBytesPeeked(109.0, CLIENT_HELLO_START)) == [StartHandshake(deadline=110.0)]


def test_permissive_inbound_forwards_plaintext_without_identity_or_policy() -> None:
    from proxy.connection.machine import Mode

    conn = Connection(spec(mode=Mode.SNIFF), now=0.0)
    conn.start(0.0, ready=True, active=0)
    (connect,) = conn.handle(ev.FirstBytesPeeked(0.1, b"GET / HTTP/1.1\r\n"))
    assert isinstance(connect, ConnectUpstream) and conn.state is ConnectionState.CONNECTING_UPSTREAM
    (relay,) = conn.handle(ev.UpstreamConnected(0.2))
    assert isinstance(relay, StartRelay) and relay.tls is False
    conn.handle(ev.DirectionFinished(1.0, ev.RelayDirection.TLS_TO_PLAIN))
    conn.handle(ev.DirectionFinished(1.0, ev.RelayDirection.PLAIN_TO_TLS))
    record = close_with_log(conn, 1.0, 5, 6)
    assert record.plaintext and record.peer_id is None and record.decision is None  # type: ignore[attr-defined]


def test_passthrough_needs_no_identity_and_relays_plaintext() -> None:
    from proxy.connection.machine import Mode

    conn = Connection(spec(Direction.OUTBOUND, mode=Mode.PLAINTEXT), now=0.0)
    assert conn.start(0.0, ready=False, active=0) == [ConnectUpstream("127.0.0.1", 8080, 5.0)]
    (relay,) = conn.handle(ev.UpstreamConnected(0.1))
    assert isinstance(relay, StartRelay) and relay.tls is False


def test_a_routing_refusal_closes_before_anything_else() -> None:
    conn = Connection(spec(refusal=(CloseReason.NO_ROUTE, "no route for original destination port 9")), now=0.0)
    (close,) = conn.start(0.0, ready=True, active=0)
    assert isinstance(close, Close) and close.reason is CloseReason.NO_ROUTE and "port 9" in close.detail


@pytest.mark.parametrize("direction", [Direction.INBOUND, Direction.OUTBOUND])
def test_the_listeners_buffer_size_reaches_the_relay(direction: Direction) -> None:
    conn = Connection(spec(direction, buffer_size=16384), now=0.0)
    conn.start(0.0, ready=True, active=0)
    if direction is Direction.INBOUND:
        conn.handle(completed(0.1))
        (relay,) = conn.handle(ev.UpstreamConnected(0.2))
    else:
        conn.handle(ev.UpstreamConnected(0.1))
        (relay,) = conn.handle(completed(0.2))
    assert isinstance(relay, StartRelay) and relay.buffer_size == 16384


def test_without_a_listener_buffer_size_the_relay_leaves_it_to_the_data_plane() -> None:
    conn = Connection(spec(), now=0.0)
    conn.start(0.0, ready=True, active=0)
    conn.handle(completed(0.1))
    (relay,) = conn.handle(ev.UpstreamConnected(0.2))
    assert isinstance(relay, StartRelay) and relay.buffer_size is None


def test_a_records_json_line_has_every_field_in_order_with_enum_labels() -> None:
    """to_json builds its dict by hand: it must not drift from the record's fields."""
    import dataclasses
    import json

    from proxy.connection.close import ConnectionRecord

    record = ConnectionRecord(listener="api", direction=Direction.INBOUND, peer_id=FRONTEND, decision=Verdict.DENY,
                              rule=None, reason=DenyReason.NO_MATCHING_RULE, detail="d", bytes_in=1, bytes_out=2, duration=0.1234567,
                              close_reason=CloseReason.DENIED, tls_version="TLSv1.3", cipher="c", resumed=True,
                              start=5.0, audit_denies=("audit-x",), plaintext=False, original_port=8080)
    data = json.loads(record.to_json())
    assert list(data) == ["event", *(f.name for f in dataclasses.fields(ConnectionRecord))]
    expected = {f.name: getattr(record, f.name) for f in dataclasses.fields(ConnectionRecord)}
    expected.update(event="connection", close_reason="denied", duration=0.123457, audit_denies=["audit-x"],
                    direction="inbound", decision="deny", reason="no_matching_rule")
    assert data == expected


def test_every_event_a_transition_table_accepts_has_a_handler_in_the_shared_table() -> None:
    from proxy.connection import machine

    tables = (machine.INBOUND_TRANSITIONS, machine.OUTBOUND_TRANSITIONS, machine.PASSTHROUGH_TRANSITIONS,
              machine.PERMISSIVE_INBOUND_TRANSITIONS)
    events = {event for table in tables for (_, event) in table}
    assert events <= set(machine._HANDLERS), events - set(machine._HANDLERS)
    assert not hasattr(Connection(spec(), now=0.0), "_handlers")  # nothing built per connection


def _relaying(now: float = 1000.0) -> Connection:
    conn = Connection(spec(), now=now)
    conn.start(now, ready=True, active=0)
    conn.handle(completed(now + 1))
    conn.handle(ev.UpstreamConnected(now + 1.5))
    assert conn.state is ConnectionState.RELAYING
    return conn


@pytest.mark.parametrize("event", [
    ev.StopRequested(1010.0), ev.DeadlineExpired(1010.0, ev.DeadlineKind.PEER_CERT_EXPIRED),
    ev.DeadlineExpired(1010.0, ev.DeadlineKind.IDLE), ev.DeadlineExpired(1010.0, ev.DeadlineKind.MAX_LIFETIME),
    ev.RelayFailed(1010.0, CloseReason.RESET, "reset by peer")])
def test_a_close_that_cuts_a_relaying_stream_is_an_abort(event: ev.Event) -> None:
    (close,) = _relaying().handle(event)
    assert isinstance(close, Close) and close.abort, "a cut stream must not end like a complete one"


def test_only_the_streams_own_end_and_refusals_before_any_byte_close_cleanly() -> None:
    conn = _relaying()
    conn.handle(ev.DirectionFinished(1002.0, ev.RelayDirection.PLAIN_TO_TLS))
    (close,) = conn.handle(ev.DirectionFinished(1003.0, ev.RelayDirection.TLS_TO_PLAIN))
    assert isinstance(close, Close) and close.reason is CloseReason.COMPLETED and not close.abort
    denied = Connection(spec(), now=1000.0)
    denied.start(1000.0, ready=True, active=0)
    (close,) = denied.handle(completed(1001.0, peer=BATCH))
    assert isinstance(close, Close) and close.reason is CloseReason.DENIED and not close.abort
