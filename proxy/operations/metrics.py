"""Prometheus metrics, derived from what the data path already produces.

The hot path pays nothing for metrics: every counter is fed from the one
``ConnectionRecord`` a connection leaves when it closes (the access log's
source), connections opened/active are read from the listener plans' plain
int counters at scrape time (a custom collector), and identity figures are
read from the store at scrape time. When the admin endpoint is off there is
no ``Metrics`` object at all and the record sink is the access log alone.
The only per-connection hook is the handshake-duration observer, which is
None when metrics are off (one attribute test in the runner).

Label values never come from unbounded input: close, handshake-failure and
deny reasons are the enum values of ``proxy.errors`` (anything else becomes
``other``); listener and rule names come from the operator's own files,
and a transparent listener is one label value whatever the original
destination port (the record's ``original_port`` carries that to the access
log), the same value its connections_opened/active samples carry.
Peer SPIFFE IDs are labels only when the operator opts in
(``admin.peer_id_labels``), and then only on one metric of their own
(``authz_decisions_by_peer_total``), so the bounded ones stay bounded.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from proxy.connection.close import ConnectionRecord
from proxy.connection.reauth import ReauthRecord
from proxy.errors import AdmissionRefusal, CloseReason, RefusalReason
from proxy.identity.store import SourceStatus

if TYPE_CHECKING:
    from proxy.identity.store import IdentityStore, SourceState
    from proxy.runtime.base import DataPlane

PREFIX = "spiffe_sidecar"
_HANDSHAKE_REFUSALS = frozenset({CloseReason.HANDSHAKE_FAILED, CloseReason.VERIFY_FAILED})
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _reason_label(reason: RefusalReason | None) -> str:
    # A record's reason is one of three enums, so the label set is bounded by construction.
    return "" if reason is None else reason.value


class Metrics:
    """The sidecar's metrics in their own registry (no process-global state, so tests can run several).

    Args:
        store: the identity store (read at scrape time).
        peer_id_labels: also count decisions per peer SPIFFE ID (opt-in; unbounded).
    """

    def __init__(self, store: IdentityStore, *, peer_id_labels: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.store = store
        self.plane: DataPlane | None = None
        r, p = self.registry, PREFIX
        self.closed = Counter(f"{p}_connections_closed", "Connections closed, by listener and close reason",
                              ["listener", "reason"], registry=r)
        self.handshakes = Counter(f"{p}_handshakes", "TLS handshakes, by listener, result and failure reason",
                                  ["listener", "result", "reason"], registry=r)
        self.handshake_seconds = Histogram(f"{p}_handshake_duration_seconds", "TLS handshake duration",
                                           ["listener"], buckets=HANDSHAKE_BUCKETS, registry=r)
        self.decisions = Counter(f"{p}_authz_decisions", "Authorization decisions, by listener, rule and decision",
                                 ["listener", "rule", "decision", "reason"], registry=r)
        self.by_peer = Counter(f"{p}_authz_decisions_by_peer", "Authorization decisions by peer SPIFFE ID"
                               " (admin.peer_id_labels)", ["listener", "peer", "decision"],
                               registry=r) if peer_id_labels else None
        self.audit = Counter(f"{p}_authz_audit_would_deny", "Audit-mode deny rules that matched (not enforced)",
                             ["listener", "rule"], registry=r)
        self.bytes_in = Counter(f"{p}_bytes_in", "Bytes from the TLS side to the plaintext side",
                                ["listener"], registry=r)
        self.bytes_out = Counter(f"{p}_bytes_out", "Bytes from the plaintext side to the TLS side",
                                 ["listener"], registry=r)
        self.rotations = Counter(f"{p}_svid_rotations", "X.509-SVID updates installed after the first", registry=r)
        self.reconnects = Counter(f"{p}_workload_api_reconnects", "Workload API stream reconnect attempts",
                                  registry=r)
        self.reloads = Counter(f"{p}_policy_reloads", "Policy/config reloads, by result", ["result"], registry=r)
        self.policy_stale = Gauge(f"{p}_policy_stale", "1 when the last reload was rejected and an older policy"
                                  " still enforces", registry=r)
        self.draining = Gauge(f"{p}_draining", "1 while draining on SIGTERM", registry=r)
        self.reauths = Counter(f"{p}_reauthentications", "Re-authentications of live peers (TLS 1.3 post-handshake"
                               " auth), by listener and outcome", ["listener", "outcome"], registry=r)
        r.register(_ScrapeTime(self))
        store.subscribe(self._on_identity)

    # --- feeds ------------------------------------------------------------------

    def observe(self, record: ConnectionRecord) -> None:
        """Count one finished connection (called from the record sink)."""
        listener = record.listener
        self.closed.labels(listener, record.close_reason.value).inc()
        if record.tls_version is not None:
            self.handshakes.labels(listener, "success", "").inc()
        elif record.close_reason in _HANDSHAKE_REFUSALS:
            self.handshakes.labels(listener, "failure", _reason_label(record.reason)).inc()
        if record.decision is not None:
            verdict = record.decision.value
            self.decisions.labels(listener, record.rule or "", verdict, _reason_label(record.reason)).inc()
            if self.by_peer is not None and record.peer_id is not None:
                self.by_peer.labels(listener, record.peer_id, verdict).inc()
        for rule in record.audit_denies:
            self.audit.labels(listener, rule).inc()
        if record.bytes_in:
            self.bytes_in.labels(listener).inc(record.bytes_in)
        if record.bytes_out:
            self.bytes_out.labels(listener).inc(record.bytes_out)

    def observe_reauth(self, record: ReauthRecord) -> None:
        """Count one re-authentication (outcome: a ReauthOutcome value, a bounded label)."""
        self.reauths.labels(record.listener, record.outcome.value).inc()

    def observe_handshake(self, listener: str, seconds: float) -> None:
        """One completed handshake's duration (the runner's only metrics hook)."""
        self.handshake_seconds.labels(listener).observe(seconds)

    def on_source_state(self, state: SourceState) -> None:
        """Workload API stream state changes (passed to the identity source as ``on_state``)."""
        if state.state is SourceStatus.RECONNECTING:
            self.reconnects.inc()

    def _on_identity(self, snapshot: Any) -> None:
        if snapshot is not None and snapshot.generation > 1:
            self.rotations.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of everything."""
        return generate_latest(self.registry)


class _ScrapeTime:
    """Figures read at scrape time: per-listener counters of the plane, and the identity's state."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        p = PREFIX
        opened = CounterMetricFamily(f"{p}_connections_opened", "Connections accepted, by listener",
                                     labels=["listener"])
        active = GaugeMetricFamily(f"{p}_connections_active", "Connections open now, by listener",
                                   labels=["listener"])
        fallbacks = CounterMetricFamily(f"{p}_resumption_fallbacks", "Full-handshake retries after an upstream"
                                        " refused a resumed session, by listener and failure reason",
                                        labels=["listener", "reason"])
        refused = CounterMetricFamily(f"{p}_connections_refused_at_accept", "Inbound connections closed at"
                                      " accept, over a pending-handshake limit, by listener and reason",
                                      labels=["listener", "reason"])
        pending = GaugeMetricFamily(f"{p}_handshakes_pending", "Inbound connections still before the end of"
                                    " their TLS handshake, by listener", labels=["listener"])
        plane = self.metrics.plane
        for plan in plane.listeners if plane is not None else ():
            opened.add_metric([plan.name], plan.accepted)
            active.add_metric([plan.name], plan.active)
            if plan.handshake_limits is not None:
                pending.add_metric([plan.name], plan.pending.total)
                for refusal in AdmissionRefusal:
                    refused.add_metric([plan.name, refusal.value], plan.refused.get(refusal.value, 0))
        for (listener, reason), count in (plane.resumption_fallbacks.items() if plane is not None else ()):
            fallbacks.add_metric([listener, _reason_label(reason)], count)
        yield opened
        yield active
        yield fallbacks
        yield refused
        yield pending
        yield from _identity_families(self.metrics.store, time.time())


def _identity_families(store: IdentityStore, now: float) -> Iterable[Any]:
    status = store.status(now)
    p = PREFIX
    expiry = GaugeMetricFamily(f"{p}_svid_seconds_to_expiry", "Seconds until our X.509-SVID expires"
                               " (negative once expired; absent before the first)")
    if status.spiffe_id is not None and status.seconds_to_expiry is not None:
        expiry.add_metric([], status.seconds_to_expiry)
    yield expiry
    yield GaugeMetricFamily(f"{p}_identity_ready", "1 while a valid X.509-SVID is held", value=int(status.ready))
    yield GaugeMetricFamily(f"{p}_svid_generation", "Generation of the current X.509-SVID",
                            value=status.generation)
    source = GaugeMetricFamily(f"{p}_identity_source_state", "1 for the identity source's current state"
                               f" ({', '.join(s.value for s in SourceStatus)})", labels=["state"])
    source.add_metric([status.source.state.value], 1)
    yield source
