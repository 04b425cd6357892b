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

Permissive inbound (transparent mode) first peeks at the client's bytes:
a ClientHello takes the inbound path above, anything else is forwarded as
plaintext (no identity, no policy). Passthrough (transparent outbound with
no route, when allowed) connects and relays plaintext. The tables are in
transitions.py.

Any failure, deadline or stop goes to CLOSING with a ``Close(reason)``;
CLOSING ignores late events from the driver; ``Closed`` emits the one
connection record. The machine never reads a clock and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from proxy.connection import events as ev
from proxy.connection.accept import admit
from proxy.connection.actions import Action, Close, ConnectUpstream, Log, LogReauth, PeekFirstBytes, StartHandshake
from proxy.connection.authorize import Authorizer, authorize
from proxy.connection.close import ConnectionRecord, close_reason_for_deadline
from proxy.connection.connect import connect_upstream
from proxy.connection.handshake import is_verify_failure
from proxy.connection.reauth import PeerExpiry, ReauthOutcome, ReauthRecord
from proxy.connection.relay import rearm, relay_deadlines
from proxy.connection.sniff import peek_is_tls_client_hello
from proxy.connection.transitions import (
    INBOUND_TRANSITIONS,
    OUTBOUND_TRANSITIONS,
    PASSTHROUGH_TRANSITIONS,
    PERMISSIVE_INBOUND_TRANSITIONS,
    ConnectionState,
    Direction,
    InvalidTransition,
    Mode,
    S,
    next_state,
    table_for,
)
from proxy.errors import CloseReason, HandshakeFailure, RefusalReason, Verdict

if TYPE_CHECKING:
    from proxy.http.settings import HttpSpec

__all__ = ["Connection", "ConnectionSpec", "ConnectionState", "Direction", "InvalidTransition", "Mode",
           "INBOUND_TRANSITIONS", "OUTBOUND_TRANSITIONS", "PASSTHROUGH_TRANSITIONS", "PERMISSIVE_INBOUND_TRANSITIONS",
           "next_state", "table_for"]

#: Bytes that decide whether a permissive inbound connection speaks TLS.
SNIFF_BYTES = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionSpec:
    """What the machine needs to know about the listener a connection came in on.

    ``authorize`` is the inbound policy evaluator or the outbound expect
    check, fetched when the connection is accepted (reloads affect new
    connections only). ``session_key`` keys client-side TLS resumption (the
    upstream address). ``refusal`` is a routing verdict made before the
    machine starts (transparent mode). ``original_port`` is the port a
    transparent listener's connection was meant for (the record carries it:
    ``listener`` stays the listener's one name, a bounded metric label).
    Timeouts are seconds; None disables one. ``buffer_size`` is the
    listener's relay buffer per direction (None: the data plane's).
    ``session_resumption`` False: full handshakes only (``tls.session_resumption``).
    ``peer_expiry`` is what the peer's NotAfter does to a relaying
    connection (None: the direction's default, see ``effective_peer_expiry``).
    ``http`` is set on ``protocol: http`` listeners: the relay then serves
    requests (proxy.http) instead of bytes; an outbound one runs in
    ``Mode.POOLED`` (no upstream of its own: the pool's connections carry
    its requests).
    """

    listener: str
    direction: Direction
    upstream_host: str
    upstream_port: int
    authorize: Authorizer
    mode: Mode = Mode.MTLS
    session_key: str | None = None
    refusal: tuple[CloseReason, str] | None = None
    original_port: int | None = None
    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float | None = 300.0
    max_lifetime: float | None = None
    max_connections: int | None = None
    buffer_size: int | None = None
    session_resumption: bool = True
    peer_expiry: PeerExpiry | None = None
    http: HttpSpec | None = None


def effective_peer_expiry(direction: Direction, configured: PeerExpiry | None) -> PeerExpiry:
    """Inbound re-authenticates by default; outbound keeps (a TLS client cannot ask a server again)."""
    if direction is Direction.OUTBOUND:
        return PeerExpiry.CLOSE if configured is PeerExpiry.CLOSE else PeerExpiry.KEEP
    return configured or PeerExpiry.REAUTHENTICATE


@dataclass(slots=True)
class _Facts:
    """What the record will say, filled in as the connection goes."""

    peer_id: str | None = None
    decision: Verdict | None = None
    rule: str | None = None
    reason: RefusalReason | None = None
    detail: str = ""
    close_reason: CloseReason = CloseReason.INTERNAL
    tls_version: str | None = None
    cipher: str | None = None
    resumed: bool = False
    not_after: float | None = None
    audit_denies: tuple[str, ...] = ()
    plaintext: bool = False
    finished: set[ev.RelayDirection] = field(default_factory=set)


Handled = tuple[list[Action], ev.Event | None]


class Connection:
    """One connection's state machine (sans-IO: events in, actions out)."""

    def __init__(self, spec: ConnectionSpec, *, now: float) -> None:
        self.spec = spec
        self.state = ConnectionState.ACCEPTED
        self.start_time = now
        self.facts = _Facts()
        #: Set at Accepted: one handshake_timeout covers the sniff and the handshake together.
        self._handshake_deadline = now + spec.handshake_timeout
        self._table = table_for(spec.direction, spec.mode)
        self.facts.plaintext = spec.mode is Mode.PLAINTEXT

    @property
    def inbound(self) -> bool:
        """True for a listener that terminates mTLS in front of our app."""
        return self.spec.direction is Direction.INBOUND

    def start(self, now: float, *, ready: bool, active: int) -> list[Action]:
        """Admit or refuse the connection; the first call after accept."""
        refusal = admit(ready=ready, active=active, max_connections=self.spec.max_connections,
                        needs_identity=self.spec.mode is not Mode.PLAINTEXT, refusal=self.spec.refusal)
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
            produced, follow = _HANDLERS[type(pending)](self, pending)
            self.state = target
            actions.extend(produced)
            pending = follow
        return actions

    # --- handlers, in connection order ---------------------------------

    def _on_accepted(self, event: ev.Event) -> Handled:
        deadline = self._handshake_deadline = event.now + self.spec.handshake_timeout
        if self.spec.mode is Mode.SNIFF:
            return [PeekFirstBytes(count=SNIFF_BYTES, deadline=deadline)], None
        if self.inbound and self.spec.mode is Mode.MTLS:
            return [StartHandshake(deadline=deadline)], None
        if self.spec.mode is Mode.POOLED:
            return self._start_relay(event.now), None
        return [self._connect_upstream(event.now)], None

    def _on_first_bytes_peeked(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.FirstBytesPeeked)
        if peek_is_tls_client_hello(event.data):
            return [], ev.ClientHelloSeen(event.now)
        return [], ev.PlaintextSeen(event.now)

    def _on_client_hello_seen(self, event: ev.Event) -> Handled:
        # The accept-time deadline, not a fresh one: a slow sniff must not double the handshake budget.
        return [StartHandshake(deadline=self._handshake_deadline)], None

    def _on_plaintext_seen(self, event: ev.Event) -> Handled:
        self.facts.plaintext = True
        self.facts.detail = "permissive: plaintext forwarded without identity or policy"
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
        self.facts.reason = event.reason
        reason = CloseReason.VERIFY_FAILED if is_verify_failure(event) else CloseReason.HANDSHAKE_FAILED
        return [self._close(reason, event.detail)], None

    def _on_peer_verified(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.PeerVerified)
        return [], authorize(event.now, event.peer_id, self.spec.authorize)

    def _on_authorized(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.Authorized)
        self._note_decision(event.decision, Verdict.ALLOW)
        if self.inbound:
            return [self._connect_upstream(event.now)], None
        return self._start_relay(event.now), None

    def _on_denied(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.Denied)
        self._note_decision(event.decision, Verdict.DENY)
        detail = getattr(event.decision, "explanation", "") or f"denied by {event.decision.rule}"
        return [self._close(CloseReason.DENIED, str(detail))], None

    def _on_upstream_connected(self, event: ev.Event) -> Handled:
        if self.inbound or self.facts.plaintext:
            return self._start_relay(event.now), None
        return [StartHandshake(deadline=event.now + self.spec.handshake_timeout)], None

    def _on_upstream_failed(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.UpstreamFailed)
        where = f"{self.spec.upstream_host}:{self.spec.upstream_port}"
        return [self._close(CloseReason.UPSTREAM_CONNECT_FAILED, f"{where}: {event.detail}")], None

    def _on_deadline_expired(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.DeadlineExpired)
        if event.kind is ev.DeadlineKind.HANDSHAKE:
            self.facts.reason = HandshakeFailure.TIMEOUT
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

    def _on_peer_reauthenticated(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.PeerReauthenticated)
        verdict = authorize(event.now, event.peer_id, event.authorize)
        if isinstance(verdict, ev.Denied):
            return [], ev.ReauthDenied(event.now, verdict.decision, event.peer_id, event.not_after)
        f = self.facts
        outcome = ReauthOutcome.RENEWED if event.not_after != f.not_after else ReauthOutcome.UNCHANGED
        record = self._reauth_record(event.now, outcome, peer_id=event.peer_id, not_after=event.not_after,
                                     rule=verdict.decision.rule)
        f.peer_id, f.not_after = event.peer_id, event.not_after
        timers = rearm(now=event.now, start=self.start_time, max_lifetime=self.spec.max_lifetime,
                       peer_not_after=event.not_after)
        return [LogReauth(record), timers], None

    def _on_reauth_denied(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.ReauthDenied)
        self._note_decision(event.decision, Verdict.DENY)
        explanation = getattr(event.decision, "explanation", "") or f"denied by {event.decision.rule}"
        detail = f"re-authentication: {event.peer_id} is not allowed by the current policy: {explanation}"
        record = self._reauth_record(event.now, ReauthOutcome.DENIED, peer_id=event.peer_id,
                                     not_after=event.not_after, rule=event.decision.rule, detail=detail,
                                     reason=event.decision.reason.value if event.decision.reason else None)
        self.facts.peer_id = event.peer_id
        return [LogReauth(record), self._close(CloseReason.DENIED, detail)], None

    def _on_reauth_failed(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.ReauthFailed)
        detail = f"re-authentication failed: {event.detail}"
        self.facts.reason = event.reason
        record = self._reauth_record(event.now, ReauthOutcome.FAILED, reason=event.reason.value, detail=detail)
        return [LogReauth(record), self._close(CloseReason.REAUTH_FAILED, detail)], None

    def _on_reauth_unsupported(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.ReauthUnsupported)
        return [self._unsupported(event.now, event.detail)], None

    def _on_stop_requested(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.StopRequested)
        return [self._close(event.reason, "sidecar stopping")], None

    def _on_closed(self, event: ev.Event) -> Handled:
        assert isinstance(event, ev.Closed)
        return [Log(self.record(event))], None

    # --- helpers ---------------------------------------------------------

    def _connect_upstream(self, now: float) -> ConnectUpstream:
        return connect_upstream(self.spec.upstream_host, self.spec.upstream_port, now=now,
                                timeout=self.spec.connect_timeout)

    def _start_relay(self, now: float) -> list[Action]:
        tls = not self.facts.plaintext
        expiry = effective_peer_expiry(self.spec.direction, self.spec.peer_expiry)
        reauth = tls and self.inbound and expiry is PeerExpiry.REAUTHENTICATE
        notes: list[Action] = []
        if reauth and self.facts.tls_version != "TLSv1.3":
            # Post-handshake authentication is TLS 1.3's: this peer is closed at its NotAfter, as before.
            notes.append(self._unsupported(now, f"{self.facts.tls_version} has no post-handshake authentication"))
            reauth = False
        relay = relay_deadlines(idle_timeout=self.spec.idle_timeout, max_lifetime=self.spec.max_lifetime,
                                start=self.start_time, tls=tls, buffer_size=self.spec.buffer_size,
                                peer_not_after=self.facts.not_after if expiry is not PeerExpiry.KEEP else None,
                                reauth_from=now if reauth else None)
        return [*notes, relay]

    def _unsupported(self, now: float, detail: str) -> LogReauth:
        return LogReauth(self._reauth_record(now, ReauthOutcome.UNSUPPORTED, not_after=self.facts.not_after,
                                             detail=f"{detail}: closing at the peer certificate's NotAfter"))

    def _reauth_record(self, now: float, outcome: ReauthOutcome, *, peer_id: str | None = None,
                       not_after: float | None = None, rule: str | None = None, reason: str | None = None,
                       detail: str = "") -> ReauthRecord:
        return ReauthRecord(listener=self.spec.listener, peer_id=peer_id, previous_peer_id=self.facts.peer_id,
                            outcome=outcome, time=now, not_after=not_after, rule=rule, reason=reason, detail=detail)

    def _close(self, reason: CloseReason, detail: str = "") -> Close:
        self.facts.close_reason = reason
        if detail or not self.facts.plaintext:
            self.facts.detail = detail
        # Handlers run before the state moves on: RELAYING here means bytes were
        # flowing, so any end but the stream's own is a cut and must look like one.
        abort = self.state is S.RELAYING and reason is not CloseReason.COMPLETED
        return Close(reason=reason, detail=detail, abort=abort)

    def _note_decision(self, decision: ev.DecisionLike, verdict: Verdict) -> None:
        self.facts.decision = verdict
        self.facts.rule = decision.rule
        if decision.reason is not None:
            self.facts.reason = decision.reason
        audit = getattr(decision, "audit_denies", ())
        self.facts.audit_denies = tuple(str(name) for name in audit)

    def record(self, closed: ev.Closed) -> ConnectionRecord:
        """The connection record as of ``closed`` (also used by tests)."""
        f = self.facts
        return ConnectionRecord(
            listener=self.spec.listener, direction=self.spec.direction, peer_id=f.peer_id,
            decision=f.decision, rule=f.rule, reason=f.reason, detail=f.detail,
            bytes_in=closed.bytes_tls_to_plain, plaintext=f.plaintext, bytes_out=closed.bytes_plain_to_tls,
            duration=max(0.0, closed.now - self.start_time), close_reason=f.close_reason,
            tls_version=f.tls_version, cipher=f.cipher, resumed=f.resumed, start=self.start_time,
            audit_denies=f.audit_denies, original_port=self.spec.original_port,
        )


#: Event type -> handler, one table for every connection (a per-connection dict of bound methods
#: cost 18 allocations per accept).
_HANDLERS: dict[type[ev.Event], Callable[[Connection, ev.Event], Handled]] = {
    ev.Accepted: Connection._on_accepted,
    ev.Refused: Connection._on_refused,
    ev.FirstBytesPeeked: Connection._on_first_bytes_peeked,
    ev.ClientHelloSeen: Connection._on_client_hello_seen,
    ev.PlaintextSeen: Connection._on_plaintext_seen,
    ev.HandshakeCompleted: Connection._on_handshake_completed,
    ev.HandshakeFailed: Connection._on_handshake_failed,
    ev.PeerVerified: Connection._on_peer_verified,
    ev.Authorized: Connection._on_authorized,
    ev.Denied: Connection._on_denied,
    ev.UpstreamConnected: Connection._on_upstream_connected,
    ev.UpstreamFailed: Connection._on_upstream_failed,
    ev.DeadlineExpired: Connection._on_deadline_expired,
    ev.DirectionFinished: Connection._on_direction_finished,
    ev.RelayFinished: Connection._on_relay_finished,
    ev.RelayFailed: Connection._on_relay_failed,
    ev.PeerReauthenticated: Connection._on_peer_reauthenticated,
    ev.ReauthDenied: Connection._on_reauth_denied,
    ev.ReauthFailed: Connection._on_reauth_failed,
    ev.ReauthUnsupported: Connection._on_reauth_unsupported,
    ev.StopRequested: Connection._on_stop_requested,
    ev.Closed: Connection._on_closed,
}
