"""The connection state machine: a table of (state, event) -> next state.

Theory of operation. One ``Connection`` per accepted socket. The runtime
driver feeds it events (what happened, with ``now``) and executes the
actions it returns (what to do next, with absolute deadlines). The table
below is the whole life of a connection; ``handle`` looks the pair up,
runs the event's handler for its actions, and follows any event the
handler derives (a verified peer is authorized at once, without a round
trip through the driver), so decisions go through the same table as I/O.

Inbound (terminate mTLS in front of an app)::

    ACCEPTED -Accepted-> HANDSHAKING -HandshakeCompleted-> VERIFIED
      -PeerVerified-> (policy) -Authorized-> AUTHORIZED (connecting to the app)
      -UpstreamConnected-> RELAYING -RelayFinished-> CLOSING -Closed-> CLOSED

Outbound (originate mTLS for an app)::

    ACCEPTED -Accepted-> CONNECTING_UPSTREAM -UpstreamConnected-> HANDSHAKING
      -HandshakeCompleted-> VERIFIED -PeerVerified-> (expect) -Authorized->
      RELAYING -> CLOSING -> CLOSED

Any failure, deadline or stop goes to CLOSING with a ``Close(reason)``;
CLOSING ignores late events from the driver; ``Closed`` emits the one
connection record. The machine never reads a clock and does no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from proxy.connection import events as ev
from proxy.connection.accept import admit
from proxy.connection.actions import Action, Close, ConnectUpstream, Log, StartHandshake
from proxy.connection.authorize import Authorizer, authorize
from proxy.connection.close import ConnectionRecord, close_reason_for_deadline
from proxy.connection.handshake import is_verify_failure
from proxy.connection.relay import relay_deadlines
from proxy.errors import CloseReason, SidecarError


class ConnectionState(enum.Enum):
    """Where a connection is in its life (see the module docstring)."""

    ACCEPTED = "accepted"
    HANDSHAKING = "handshaking"
    VERIFIED = "verified"
    AUTHORIZED = "authorized"
    CONNECTING_UPSTREAM = "connecting_upstream"
    RELAYING = "relaying"
    CLOSING = "closing"
    CLOSED = "closed"


class Direction(enum.Enum):
    """Inbound terminates mTLS in front of our app; outbound originates it for our app."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class InvalidTransition(SidecarError):
    """An event arrived in a state where it cannot happen: a driver bug."""

    def __init__(self, state: ConnectionState, event: ev.Event) -> None:
        self.state = state
        self.event = event
        super().__init__(f"no transition from {state.name} on {type(event).__name__}")


S = ConnectionState
Transitions = dict[tuple[ConnectionState, type[ev.Event]], ConnectionState]

_COMMON: Transitions = {
    (S.ACCEPTED, ev.Refused): S.CLOSING,
    (S.HANDSHAKING, ev.HandshakeFailed): S.CLOSING,
    (S.VERIFIED, ev.PeerVerified): S.VERIFIED,
    (S.VERIFIED, ev.Denied): S.CLOSING,
    (S.RELAYING, ev.DirectionFinished): S.RELAYING,
    (S.RELAYING, ev.RelayFinished): S.CLOSING,
    (S.RELAYING, ev.RelayFailed): S.CLOSING,
    (S.CLOSING, ev.Closed): S.CLOSED,
}

INBOUND_TRANSITIONS: Transitions = {
    **_COMMON,
    (S.ACCEPTED, ev.Accepted): S.HANDSHAKING,
    (S.HANDSHAKING, ev.HandshakeCompleted): S.VERIFIED,
    (S.VERIFIED, ev.Authorized): S.AUTHORIZED,
    (S.AUTHORIZED, ev.UpstreamConnected): S.RELAYING,
    (S.AUTHORIZED, ev.UpstreamFailed): S.CLOSING,
}

OUTBOUND_TRANSITIONS: Transitions = {
    **_COMMON,
    (S.ACCEPTED, ev.Accepted): S.CONNECTING_UPSTREAM,
    (S.CONNECTING_UPSTREAM, ev.UpstreamConnected): S.HANDSHAKING,
    (S.CONNECTING_UPSTREAM, ev.UpstreamFailed): S.CLOSING,
    (S.HANDSHAKING, ev.HandshakeCompleted): S.VERIFIED,
    (S.VERIFIED, ev.Authorized): S.RELAYING,
}

#: Events that end a connection from any open state.
_ABORTS = (ev.DeadlineExpired, ev.StopRequested, ev.RelayFailed)
#: Events a driver may still report after it was told to close (races): ignored.
_LATE = (ev.DeadlineExpired, ev.StopRequested, ev.DirectionFinished, ev.RelayFailed, ev.RelayFinished,
         ev.UpstreamConnected, ev.UpstreamFailed, ev.HandshakeCompleted, ev.HandshakeFailed)


def next_state(table: Transitions, state: ConnectionState, event: ev.Event) -> ConnectionState | None:
    """The table lookup, with the abort and late-event rules; None if invalid."""
    found = table.get((state, type(event)))
    if found is not None:
        return found
    if state is S.CLOSING and isinstance(event, _LATE):
        return S.CLOSING
    if state not in (S.CLOSING, S.CLOSED) and isinstance(event, _ABORTS):
        return S.CLOSING
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionSpec:
    """What the machine needs to know about the listener a connection came in on.

    ``authorize`` is the inbound policy evaluator or the outbound expect
    check, fetched when the connection is accepted (reloads affect new
    connections only). Timeouts are seconds; None disables one.
    """

    listener: str
    direction: Direction
    upstream_host: str
    upstream_port: int
    authorize: Authorizer
    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float | None = 300.0
    max_lifetime: float | None = None
    max_connections: int | None = None


@dataclass(slots=True)
class _Facts:
    """What the record will say, filled in as the connection goes."""

    peer_id: str | None = None
    decision: str | None = None
    rule: str | None = None
    reason: str | None = None
    detail: str = ""
    close_reason: CloseReason = CloseReason.INTERNAL
    tls_version: str | None = None
    cipher: str | None = None
    resumed: bool = False
    not_after: float | None = None
    audit_denies: tuple[str, ...] = ()
    finished: set[ev.RelayDirection] = field(default_factory=set)


Handled = tuple[list[Action], ev.Event | None]


class Connection:
    """One connection's state machine (sans-IO: events in, actions out)."""

    def __init__(self, spec: ConnectionSpec, *, now: float) -> None:
        self.spec = spec
        self.state = ConnectionState.ACCEPTED
        self.start_time = now
        self.facts = _Facts()
        self._table = INBOUND_TRANSITIONS if spec.direction is Direction.INBOUND else OUTBOUND_TRANSITIONS
        self._handlers: dict[type[ev.Event], Callable[[ev.Event], Handled]] = {
            ev.Accepted: self._on_accepted,
            ev.Refused: self._on_refused,
            ev.HandshakeCompleted: self._on_handshake_completed,
            ev.HandshakeFailed: self._on_handshake_failed,
            ev.PeerVerified: self._on_peer_verified,
            ev.Authorized: self._on_authorized,
            ev.Denied: self._on_denied,
            ev.UpstreamConnected: self._on_upstream_connected,
            ev.UpstreamFailed: self._on_upstream_failed,
            ev.DeadlineExpired: self._on_deadline_expired,
            ev.DirectionFinished: self._on_direction_finished,
            ev.RelayFinished: self._on_relay_finished,
            ev.RelayFailed: self._on_relay_failed,
            ev.StopRequested: self._on_stop_requested,
            ev.Closed: self._on_closed,
        }

    @property
    def inbound(self) -> bool:
        """True for a listener that terminates mTLS in front of our app."""
        return self.spec.direction is Direction.INBOUND

    def start(self, now: float, *, ready: bool, active: int) -> list[Action]:
        """Admit or refuse the connection; the first call after accept."""
        refusal = admit(ready=ready, active=active, max_connections=self.spec.max_connections)
        if refusal is not None:
            return self.handle(ev.Refused(now, refusal[0], refusal[1]))
        return self.handle(ev.Accepted(now))

    def handle(self, event: ev.Event) -> list[Action]:
        """Apply one event (and the events it derives); return the actions to run."""
        actions: list[Action] = []
        pending: ev.Event | None = event
        while pending is not None:
            target = next_state(self._table, self.state, pending)
            if target is None:
                raise InvalidTransition(self.state, pending)
            if self.state is S.CLOSING and target is S.CLOSING:
                return actions  # a late event after Close: nothing more to do
            produced, follow = self._handlers[type(pending)](pending)
            self.state = target
            actions.extend(produced)
            pending = follow
        return actions

    # --- handlers, in connection order ---------------------------------

    def _on_accepted(self, event: ev.Event) -> Handled:
        if self.inbound:
            return [StartHandshake(deadline=event.now + self.spec.handshake_timeout)], None
        return [self._connect_upstream(event.now)], None

    def _on_refused(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.Refused)
        return [self._close(event.reason, event.detail)], None

    def _on_handshake_completed(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.HandshakeCompleted)
        f = self.facts
        f.peer_id, f.not_after, f.resumed = event.peer_id, event.not_after, event.resumed
        f.tls_version, f.cipher = event.version, event.cipher
        return [], ev.PeerVerified(event.now, event.peer_id)

    def _on_handshake_failed(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.HandshakeFailed)
        self.facts.reason = event.reason.value
        reason = CloseReason.VERIFY_FAILED if is_verify_failure(event) else CloseReason.HANDSHAKE_FAILED
        return [self._close(reason, event.detail)], None

    def _on_peer_verified(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.PeerVerified)
        return [], authorize(event.now, event.peer_id, self.spec.authorize)

    def _on_authorized(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.Authorized)
        self._note_decision(event.decision, "allow")
        if self.inbound:
            return [self._connect_upstream(event.now)], None
        return [self._start_relay()], None

    def _on_denied(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.Denied)
        self._note_decision(event.decision, "deny")
        detail = getattr(event.decision, "explanation", "") or f"denied by {event.decision.rule}"
        return [self._close(CloseReason.DENIED, str(detail))], None

    def _on_upstream_connected(self, event: ev.Event) -> Handled:
        if self.inbound:
            return [self._start_relay()], None
        return [StartHandshake(deadline=event.now + self.spec.handshake_timeout)], None

    def _on_upstream_failed(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.UpstreamFailed)
        where = f"{self.spec.upstream_host}:{self.spec.upstream_port}"
        return [self._close(CloseReason.UPSTREAM_CONNECT_FAILED, f"{where}: {event.detail}")], None

    def _on_deadline_expired(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.DeadlineExpired)
        if event.kind is ev.DeadlineKind.HANDSHAKE:
            self.facts.reason = "timeout"
        return [self._close(close_reason_for_deadline(event.kind.value), f"{event.kind.value} deadline")], None

    def _on_direction_finished(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.DirectionFinished)
        self.facts.finished.add(event.direction)
        if len(self.facts.finished) == len(ev.RelayDirection):
            return [], ev.RelayFinished(event.now)
        return [], None

    def _on_relay_finished(self, event: ev.Event) -> Handled:
        return [self._close(CloseReason.COMPLETED)], None

    def _on_relay_failed(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.RelayFailed)
        return [self._close(event.reason, event.detail)], None

    def _on_stop_requested(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.StopRequested)
        return [self._close(event.reason, "sidecar stopping")], None

    def _on_closed(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.Closed)
        return [Log(self.record(event))], None

    # --- helpers ---------------------------------------------------------

    def _connect_upstream(self, now: float) -> ConnectUpstream:
        return ConnectUpstream(host=self.spec.upstream_host, port=self.spec.upstream_port,
                               deadline=now + self.spec.connect_timeout)

    def _start_relay(self) -> Action:
        return relay_deadlines(idle_timeout=self.spec.idle_timeout, max_lifetime=self.spec.max_lifetime,
                               start=self.start_time, peer_not_after=self.facts.not_after)

    def _close(self, reason: CloseReason, detail: str = "") -> Close:
        self.facts.close_reason = reason
        self.facts.detail = detail
        return Close(reason=reason, detail=detail)

    def _note_decision(self, decision: ev.DecisionLike, verdict: str) -> None:
        self.facts.decision = verdict
        self.facts.rule = decision.rule
        if decision.reason is not None:
            self.facts.reason = decision.reason.value
        audit = getattr(decision, "audit_denies", ())
        self.facts.audit_denies = tuple(str(name) for name in audit)

    def record(self, closed: ev.Closed) -> ConnectionRecord:
        """The connection record as of ``closed`` (also used by tests)."""
        f = self.facts
        return ConnectionRecord(
            listener=self.spec.listener, direction=self.spec.direction.value, peer_id=f.peer_id,
            decision=f.decision, rule=f.rule, reason=f.reason, detail=f.detail,
            bytes_in=closed.bytes_tls_to_plain, bytes_out=closed.bytes_plain_to_tls,
            duration=max(0.0, closed.now - self.start_time), close_reason=f.close_reason,
            tls_version=f.tls_version, cipher=f.cipher, resumed=f.resumed, start=self.start_time,
            audit_denies=f.audit_denies,
        )
