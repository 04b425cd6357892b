"""What the runtime driver must do next: the outputs of the state machine.

Actions are imperative and carry absolute deadlines in the clock the
events' ``now`` came from (Unix seconds); the driver converts them to its own
timers. A driver executes actions and reports the outcome as events; it
never decides anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.connection.close import ConnectionRecord
from proxy.connection.events import DeadlineKind
from proxy.connection.reauth import ReauthRecord
from proxy.errors import CloseReason


@dataclass(frozen=True, slots=True)
class Action:
    """Base class of every action."""


@dataclass(frozen=True, slots=True)
class StartHandshake(Action):
    """Run the TLS handshake (server or client per the listener) until ``deadline``.

    Report HandshakeCompleted, HandshakeFailed or DeadlineExpired(HANDSHAKE).
    """

    deadline: float


@dataclass(frozen=True, slots=True)
class PeekFirstBytes(Action):
    """Peek (MSG_PEEK, without consuming) at least ``count`` bytes or up to EOF, before ``deadline``.

    Report FirstBytesPeeked or DeadlineExpired(HANDSHAKE).
    """

    count: int
    deadline: float


@dataclass(frozen=True, slots=True)
class ConnectUpstream(Action):
    """Open a TCP connection to ``host:port`` before ``deadline``.

    Report UpstreamConnected, UpstreamFailed or DeadlineExpired(CONNECT).
    """

    host: str
    port: int
    deadline: float


@dataclass(frozen=True, slots=True)
class StartRelay(Action):
    """Relay both directions with half-close.

    ``idle_timeout`` is a sliding window (seconds without a byte moving
    either way) or None; ``lifetime_deadline`` is absolute, reported as
    DeadlineExpired(``lifetime_kind``) when it passes. ``tls`` False: both
    sides are plaintext (permissive inbound, passthrough outbound).
    ``buffer_size`` is bytes per direction from the listener's own
    ``limits.buffer_size``; None: the data plane's default. ``reauth_at``
    (absolute, inbound TLS 1.3 with ``peer_expiry: reauthenticate``): when
    to ask the peer for its certificate again (see RearmRelay).
    """

    idle_timeout: float | None
    lifetime_deadline: float | None
    lifetime_kind: DeadlineKind
    tls: bool = True
    buffer_size: int | None = None
    reauth_at: float | None = None


@dataclass(frozen=True, slots=True)
class RearmRelay(Action):
    """Keep relaying with new timers: after a re-authentication the peer's new NotAfter bounds it.

    ``reauth_at`` (absolute, or None: not again) is when to send the next
    post-handshake certificate request; report PeerReauthenticated,
    ReauthFailed or ReauthUnsupported. Never changes the idle timeout.
    """

    lifetime_deadline: float | None
    lifetime_kind: DeadlineKind
    reauth_at: float | None


@dataclass(frozen=True, slots=True)
class LogReauth(Action):
    """Emit one re-authentication record (access log line and metric), the connection going on or not."""

    record: ReauthRecord


@dataclass(frozen=True, slots=True)
class Close(Action):
    """Stop everything, close the sockets, then report Closed with byte counts.

    ``abort``: the sidecar ends a stream that was relaying and is not at its
    end (drain timeout, expiry, idle, a failure): no close_notify, and a TCP
    reset (SO_LINGER 0) on both sockets, so neither the TLS peer nor the app
    can take the cut for an orderly end of stream. False: a real end, or a
    refusal before any byte was relayed (nothing can be truncated then).
    """

    reason: CloseReason
    detail: str = ""
    abort: bool = False


@dataclass(frozen=True, slots=True)
class Log(Action):
    """Emit the connection record (one per connection, on the way to CLOSED)."""

    record: ConnectionRecord
