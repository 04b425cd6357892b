"""The one place the current identity lives: validated snapshots, swapped whole.

``IdentityStore.publish`` validates an incoming snapshot (our leaf not
expired, a bundle for our own trust domain present, our chain verifying
against it as a peer would verify it), numbers it, and swaps
one reference. An invalid update never replaces a good snapshot: the
store keeps the last good one and records why the update was refused.
``current(now)`` fails closed: None before the first SVID, after a
withdrawal (redaction, PERMISSION_DENIED), and once the held SVID expired.

Sources (the Workload API stream, the file watcher) also report their
state here (``report``), so readiness checks and the first-SVID diagnostic
read one object.

Threads: publish may run in the Workload API thread while the data plane
reads from another (uvloop runtime). Reads are a single attribute load;
publications and subscriber notifications are serialized by a lock, so
subscribers see snapshots in generation order. Subscribers run in the
publishing thread and must be quick; a runtime that needs its own thread
hops there itself.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from typing import Callable

from proxy.errors import NoIdentityError, VerificationError
from proxy.identity import rotation
from proxy.identity.snapshot import IdentitySnapshot, has_bundle
from proxy.spiffe.verify import verify_x509_svid_chain

_log = logging.getLogger(__name__)

#: Called after each change with the new snapshot, or None when withdrawn.
Subscriber = Callable[[IdentitySnapshot | None], None]


class SourceStatus(enum.StrEnum):
    """Where an identity source is (the ``state`` label of spiffe_sidecar_identity_source_state).

    One list for both sources, so /identity, the metric and the docs cannot
    drift apart: the Workload API stream is starting, connected,
    reconnecting, withdrawn (the agent took our SVID away) or failed; the
    files source is loaded or invalid (the files cannot be used; the last
    good snapshot stays).
    """

    STARTING = "starting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    WITHDRAWN = "withdrawn"
    FAILED = "failed"
    LOADED = "loaded"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class SourceState:
    """What a source last said about itself, for operators.

    Attributes:
        state: a SourceStatus.
        source: the address or path being read.
        last_error: the last error (verbatim from the server when it sent one).
        since: when this state began (Unix seconds, from the source's clock).
        attempt: consecutive failed attempts (0 when connected).
    """

    state: SourceStatus
    source: str = ""
    last_error: str | None = None
    since: float = 0.0
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class IdentityStatus:
    """The identity's health at one instant, for /ready, metrics and logs.

    Attributes:
        ready: a usable snapshot is held (not expired, not withdrawn).
        spiffe_id: our SPIFFE ID, or None.
        generation: the current snapshot's generation (0 when none).
        seconds_to_expiry: of our SVID; None without one.
        stale: our SVID is past 3/4 of its lifetime and no renewal came
            (the source is stuck: alert before it expires, envoy#35216).
        source: the source's last reported state.
    """

    ready: bool
    spiffe_id: str | None
    generation: int
    seconds_to_expiry: float | None
    stale: bool
    source: SourceState


class IdentityStore:
    """Holds the current identity snapshot; see the module docstring."""

    def __init__(self, *, source: str = "") -> None:
        """``source`` labels the starting state, so /ready and the diagnostics can name where the
        SVID should come from before the source task has run at all."""
        self._lock = threading.Lock()
        self._snapshot: IdentitySnapshot | None = None
        self._generation = 0
        self._subscribers: list[Subscriber] = []
        self._state = SourceState(SourceStatus.STARTING, source=source)
        self._last_rejection: str | None = None

    # -- reading ----------------------------------------------------------------

    def current(self, now: float) -> IdentitySnapshot | None:
        """The snapshot to use at ``now``, or None (fail closed) when none or expired."""
        snapshot = self._snapshot
        if snapshot is None or rotation.is_expired(snapshot.not_after, now):
            return None
        return snapshot

    def require(self, now: float) -> IdentitySnapshot:
        """Like ``current`` but raises NoIdentityError saying why there is none."""
        snapshot = self._snapshot
        if snapshot is None:
            detail = f" (last error: {self._state.last_error})" if self._state.last_error else ""
            raise NoIdentityError(f"no X.509-SVID yet from {self._state.source or 'the identity source'}{detail}")
        if rotation.is_expired(snapshot.not_after, now):
            raise NoIdentityError(f"our X.509-SVID {snapshot.spiffe_id} expired at {snapshot.not_after:.0f} "
                                  "and no renewal arrived")
        return snapshot

    def status(self, now: float) -> IdentityStatus:
        """Summarize the identity's health at ``now``."""
        snapshot = self._snapshot
        if snapshot is None:
            return IdentityStatus(False, None, 0, None, False, self._state)
        svid = snapshot.svid
        return IdentityStatus(ready=not rotation.is_expired(svid.not_after, now), spiffe_id=snapshot.spiffe_id,
                              generation=snapshot.generation,
                              seconds_to_expiry=rotation.seconds_to_expiry(svid.not_after, now),
                              stale=rotation.is_stale(svid.not_before, svid.not_after, now), source=self._state)

    @property
    def latest(self) -> IdentitySnapshot | None:
        """The last published snapshot, expired or not (for diagnostics only)."""
        return self._snapshot

    @property
    def generation(self) -> int:
        """Number of successful publications so far."""
        return self._generation

    @property
    def state(self) -> SourceState:
        """The source's last reported state."""
        return self._state

    @property
    def last_rejection(self) -> str | None:
        """Why the last refused update was refused (None if none was)."""
        return self._last_rejection

    # -- writing ----------------------------------------------------------------

    def publish(self, snapshot: IdentitySnapshot, now: float) -> IdentitySnapshot:
        """Validate ``snapshot``, number it and make it current; notify subscribers.

        Returns:
            The published snapshot (with its generation).

        Raises:
            NoIdentityError: the snapshot is unusable (expired leaf, no
                bundle for our trust domain); the previous one stays current.
        """
        problem = self.validate(snapshot, now)
        with self._lock:
            if problem is not None:
                self._last_rejection = problem
                raise NoIdentityError(problem)
            self._generation += 1
            published = snapshot.with_generation(self._generation)
            self._snapshot = published
            self._notify(published)
        return published

    def withdraw(self, reason: str) -> None:
        """Stop using the current snapshot (the server redacted it or denied us)."""
        with self._lock:
            self._last_rejection = reason
            if self._snapshot is None:
                return
            self._snapshot = None
            self._notify(None)

    def report(self, state: SourceState) -> None:
        """Record the source's state (connected, reconnecting with last error...)."""
        self._state = state

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` after every change; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    @staticmethod
    def validate(snapshot: IdentitySnapshot, now: float) -> str | None:
        """Why ``snapshot`` must not be published at ``now``, or None when it is fine."""
        svid = snapshot.svid
        if rotation.is_expired(svid.not_after, now):
            return f"refused update: X.509-SVID {svid.spiffe_id} already expired ({svid.not_after:.0f} <= {now:.0f})"
        td = svid.spiffe_id.trust_domain
        if not has_bundle(snapshot.bundles, td):
            return f"refused update: no bundle for our own trust domain {td.name!r}"
        try:
            # Peers verify us against this very bundle: an SVID that does not
            # chain to it would fail every handshake, so keep the last good one.
            verify_x509_svid_chain(svid.chain_der, snapshot.bundles.der_map(), now)
        except VerificationError as exc:
            return f"refused update: our X.509-SVID does not verify against our own bundle: {exc}"
        return None

    def _notify(self, snapshot: IdentitySnapshot | None) -> None:
        for callback in list(self._subscribers):
            try:
                callback(snapshot)
            except Exception:  # one broken subscriber must not starve the others
                _log.exception("identity subscriber %r failed on generation %d", callback, self._generation)
