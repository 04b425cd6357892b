"""What happened to a connection: the inputs of the connection state machine.

Events are past tense and carry only plain values (str, int, float, enums).
The runtime driver reports I/O outcomes (``Accepted``, ``HandshakeCompleted``,
``UpstreamConnected`` ...); the machine itself derives the decision events
(``Refused``, ``PeerVerified``, ``Authorized``, ``Denied``) from pure helpers,
so every step, I/O or not, goes through the one transition table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Protocol

from proxy.errors import CloseReason, DenyReason, HandshakeFailure, VerifyFailure


class DeadlineKind(enum.Enum):
    """Which timer ran out (the driver echoes the kind the action gave it)."""

    HANDSHAKE = "handshake"
    CONNECT = "connect"
    IDLE = "idle"
    MAX_LIFETIME = "max_lifetime"
    PEER_CERT_EXPIRED = "peer_cert_expired"


class RelayDirection(enum.Enum):
    """A relay direction, named from the TLS side's point of view."""

    TLS_TO_PLAIN = "tls_to_plain"
    PLAIN_TO_TLS = "plain_to_tls"


class DecisionLike(Protocol):
    """What the core needs of a policy decision (proxy.policy's Decision fits)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def rule(self) -> str | None: ...

    @property
    def reason(self) -> DenyReason | None: ...


@dataclass(frozen=True, slots=True)
class Event:
    """Base class: every event happened at ``now`` (Unix seconds, from the driver)."""

    now: float


@dataclass(frozen=True, slots=True)
class Accepted(Event):
    """The connection was admitted (identity ready, below max connections)."""


@dataclass(frozen=True, slots=True)
class Refused(Event):
    """The connection was not admitted (derived by accept.admit)."""

    reason: CloseReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FirstBytesPeeked(Event):
    """Permissive inbound: the first bytes the client sent, peeked (not consumed)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ClientHelloSeen(Event):
    """The peeked bytes start a TLS ClientHello: take the mTLS path (derived)."""


@dataclass(frozen=True, slots=True)
class PlaintextSeen(Event):
    """The peeked bytes are not TLS: permissive mode forwards them as they are (derived)."""


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(Event):
    """The TLS handshake finished and the engine verified the peer's X.509-SVID."""

    peer_id: str
    not_after: float
    version: str
    cipher: str
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class HandshakeFailed(Event):
    """The handshake or the SPIFFE verification inside it failed."""

    reason: HandshakeFailure | VerifyFailure
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PeerVerified(Event):
    """The peer's SPIFFE ID is known and verified (derived after HandshakeCompleted)."""

    peer_id: str


@dataclass(frozen=True, slots=True)
class Authorized(Event):
    """The policy (inbound) or the expect matcher (outbound) allowed the peer."""

    decision: DecisionLike


@dataclass(frozen=True, slots=True)
class Denied(Event):
    """The policy or the expect matcher refused the peer."""

    decision: DecisionLike


@dataclass(frozen=True, slots=True)
class UpstreamConnected(Event):
    """The TCP connection to the upstream (app or remote sidecar) is established."""


@dataclass(frozen=True, slots=True)
class UpstreamFailed(Event):
    """Connecting to the upstream failed (refused, unreachable...)."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeadlineExpired(Event):
    """A deadline or timeout handed out in an action ran out."""

    kind: DeadlineKind


@dataclass(frozen=True, slots=True)
class DirectionFinished(Event):
    """One relay direction reached EOF and was half-closed on the other side."""

    direction: RelayDirection


@dataclass(frozen=True, slots=True)
class RelayFinished(Event):
    """Both directions are finished (derived after the second DirectionFinished)."""


@dataclass(frozen=True, slots=True)
class RelayFailed(Event):
    """The relay broke (TLS protocol error, reset): the connection is over."""

    reason: CloseReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PeerReauthenticated(Event):
    """The relayed peer answered a post-handshake certificate request with a chain that verified.

    ``authorize`` is the listener's evaluator as of now (the policy in force
    at this moment, not the one the connection was accepted under): the
    machine re-authorizes ``peer_id`` with it.
    """

    peer_id: str
    not_after: float
    authorize: Callable[[str], DecisionLike]


@dataclass(frozen=True, slots=True)
class ReauthDenied(Event):
    """The re-authenticated peer is refused by the current policy (derived after PeerReauthenticated)."""

    decision: DecisionLike
    peer_id: str
    not_after: float


@dataclass(frozen=True, slots=True)
class ReauthFailed(Event):
    """Re-authentication failed: the new chain did not verify, or the exchange broke the connection.

    ``reason``: the VerifyFailure of the chain, or a HandshakeFailure (TIMEOUT: no answer
    before the old NotAfter; PEER_CLOSED: the connection broke during the exchange).
    """

    reason: HandshakeFailure | VerifyFailure
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReauthUnsupported(Event):
    """The peer cannot be asked again (no post_handshake_auth from it): it is closed at its NotAfter."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class StopRequested(Event):
    """The sidecar is stopping (graceful stop or drain) and this connection must end."""

    reason: CloseReason = CloseReason.DRAINED


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The driver closed every socket of the connection; final byte counts."""

    bytes_tls_to_plain: int = 0
    bytes_plain_to_tls: int = 0
