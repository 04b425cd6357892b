"""The transition tables: every (state, event) a connection can meet, and where it leads.

One table per kind of listener: inbound mTLS, permissive inbound (sniff
first: mTLS or plaintext), outbound mTLS, and plaintext passthrough
(transparent outbound with no route, when configured to pass). The
table is the whole protocol; machine.py only runs it.
"""

from __future__ import annotations

import enum

from proxy.connection import events as ev
from proxy.errors import SidecarError


class ConnectionState(enum.Enum):
    """Where a connection is in its life (see the module docstring)."""

    ACCEPTED = "accepted"
    SNIFFING = "sniffing"
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


class Mode(enum.Enum):
    """How a listener treats its connections (transparent mode adds the last two)."""

    MTLS = "mtls"
    SNIFF = "sniff"  # permissive inbound: mTLS when a ClientHello comes, else plaintext to the app
    PLAINTEXT = "plaintext"  # passthrough: plain TCP both sides, no identity, no policy
    POOLED = "pooled"  # outbound HTTP: the app's requests go over the listener's pooled mTLS connections


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
    (S.RELAYING, ev.PeerReauthenticated): S.RELAYING,
    (S.RELAYING, ev.ReauthUnsupported): S.RELAYING,
    (S.RELAYING, ev.ReauthDenied): S.CLOSING,
    (S.RELAYING, ev.ReauthFailed): S.CLOSING,
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

PERMISSIVE_INBOUND_TRANSITIONS: Transitions = {
    **INBOUND_TRANSITIONS,
    (S.ACCEPTED, ev.Accepted): S.SNIFFING,
    (S.SNIFFING, ev.FirstBytesPeeked): S.SNIFFING,
    (S.SNIFFING, ev.ClientHelloSeen): S.HANDSHAKING,
    (S.SNIFFING, ev.PlaintextSeen): S.CONNECTING_UPSTREAM,
    (S.CONNECTING_UPSTREAM, ev.UpstreamConnected): S.RELAYING,
    (S.CONNECTING_UPSTREAM, ev.UpstreamFailed): S.CLOSING,
}

PASSTHROUGH_TRANSITIONS: Transitions = {
    **_COMMON,
    (S.ACCEPTED, ev.Accepted): S.CONNECTING_UPSTREAM,
    (S.CONNECTING_UPSTREAM, ev.UpstreamConnected): S.RELAYING,
    (S.CONNECTING_UPSTREAM, ev.UpstreamFailed): S.CLOSING,
}


#: Outbound HTTP: the app's connection is served at once; upstream connections are the pool's.
POOLED_TRANSITIONS: Transitions = {
    **_COMMON,
    (S.ACCEPTED, ev.Accepted): S.RELAYING,
}


def table_for(direction: Direction, mode: Mode) -> Transitions:
    """The table a listener's connections run."""
    if mode is Mode.PLAINTEXT:
        return PASSTHROUGH_TRANSITIONS
    if mode is Mode.POOLED:
        return POOLED_TRANSITIONS
    if direction is Direction.OUTBOUND:
        return OUTBOUND_TRANSITIONS
    return PERMISSIVE_INBOUND_TRANSITIONS if mode is Mode.SNIFF else INBOUND_TRANSITIONS


#: Events that end a connection from any open state.
_ABORTS = (ev.DeadlineExpired, ev.StopRequested, ev.RelayFailed)
#: Events a driver may still report after it was told to close (races): ignored.
_LATE = (ev.DeadlineExpired, ev.StopRequested, ev.DirectionFinished, ev.RelayFailed, ev.RelayFinished,
         ev.PeerReauthenticated, ev.ReauthFailed, ev.ReauthUnsupported,
         ev.UpstreamConnected, ev.UpstreamFailed, ev.HandshakeCompleted, ev.HandshakeFailed, ev.FirstBytesPeeked)


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
