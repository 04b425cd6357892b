"""The identity store: validated snapshots swapped whole, fail closed, last good kept."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from proxy.errors import NoIdentityError
from proxy.identity.snapshot import IdentitySnapshot
from proxy.identity.store import IdentityStore, SourceState, SourceStatus

NOW = time.time()
NOW_FROM_WALL_CLOCK = True  # refreshed before each test by tests/conftest.py


def test_empty_store_fails_closed(make_snapshot) -> None:
    store = IdentityStore()
    assert store.current(NOW) is None
    store.report(SourceState(SourceStatus.RECONNECTING, source="unix:///x", last_error="UNAVAILABLE: refused"))
    with pytest.raises(NoIdentityError, match="UNAVAILABLE: refused"):
        store.require(NOW)


def test_publish_numbers_generations_and_swaps(make_snapshot) -> None:
    store = IdentityStore()
    first = store.publish(make_snapshot("/a"), NOW)
    second = store.publish(make_snapshot("/b"), NOW)
    assert (first.generation, second.generation) == (1, 2)
    assert store.current(NOW) is second and store.current(NOW).spiffe_id == "spiffe://example.org/b"


def test_expired_update_is_refused_and_last_good_kept(make_snapshot) -> None:
    store = IdentityStore()
    good = store.publish(make_snapshot("/good"), NOW)
    stale = make_snapshot("/old", not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3))
    with pytest.raises(NoIdentityError, match="already expired"):
        store.publish(stale, NOW)
    assert store.current(NOW) is good and store.generation == 1
    assert "already expired" in (store.last_rejection or "")


def test_update_without_own_bundle_is_refused(make_snapshot) -> None:
    store = IdentityStore()
    good = store.publish(make_snapshot(), NOW)
    with pytest.raises(NoIdentityError, match="no bundle for our own trust domain 'example.org'"):
        store.publish(make_snapshot(own_bundle=False), NOW)
    assert store.current(NOW) is good


def test_current_is_none_once_the_svid_expires(make_snapshot) -> None:
    store = IdentityStore()
    snap = store.publish(make_snapshot(lifetime=dt.timedelta(minutes=10)), NOW)
    assert store.current(snap.not_after - 1) is snap
    assert store.current(snap.not_after) is None
    with pytest.raises(NoIdentityError, match="expired"):
        store.require(snap.not_after + 1)
    assert store.latest is snap  # still visible to diagnostics


def test_withdraw_fails_closed_and_notifies(make_snapshot) -> None:
    store = IdentityStore()
    seen: list[IdentitySnapshot | None] = []
    store.subscribe(seen.append)
    snap = store.publish(make_snapshot(), NOW)
    store.withdraw("redacted")
    assert seen == [snap, None] and store.current(NOW) is None


def test_subscribers_called_after_swap_and_can_unsubscribe(make_snapshot) -> None:
    store = IdentityStore()
    observed: list[int] = []

    def callback(snapshot: IdentitySnapshot | None) -> None:
        assert store.current(NOW) is snapshot  # the swap happened before the call
        observed.append(snapshot.generation if snapshot else -1)

    unsubscribe = store.subscribe(callback)
    store.publish(make_snapshot(), NOW)
    unsubscribe()
    store.publish(make_snapshot(), NOW)
    assert observed == [1]


def test_a_failing_subscriber_does_not_starve_others(make_snapshot) -> None:
    store = IdentityStore()
    got: list[object] = []
    store.subscribe(lambda s: 1 / 0)
    store.subscribe(got.append)
    snap = store.publish(make_snapshot(), NOW)
    assert got == [snap]


def test_concurrent_publishers_keep_generations_unique_and_ordered(make_snapshot) -> None:
    store = IdentityStore()
    snapshots = [make_snapshot(f"/w{i}") for i in range(8)]
    seen: list[int] = []
    store.subscribe(lambda s: seen.append(s.generation if s else -1))
    threads = [threading.Thread(target=lambda s=s: [store.publish(s, NOW) for _ in range(25)]) for s in snapshots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == list(range(1, 201)) and store.generation == 200


def test_status_reports_readiness_expiry_and_staleness(make_snapshot) -> None:
    store = IdentityStore()
    assert not store.status(NOW).ready and store.status(NOW).spiffe_id is None
    snap = store.publish(make_snapshot(lifetime=dt.timedelta(minutes=40)), NOW)
    start, end = snap.svid.not_before, snap.not_after
    fresh = store.status(start + 60)
    assert fresh.ready and not fresh.stale and fresh.generation == 1
    assert fresh.seconds_to_expiry == pytest.approx(end - start - 60)
    late = store.status(start + 0.8 * (end - start))
    assert late.ready and late.stale
    assert not store.status(end).ready


def test_svid_not_chaining_to_our_own_bundle_is_refused(make_snapshot) -> None:
    from support import pki
    from support.grpcio_workload_server import x509_response

    from proxy.identity import messages

    store = IdentityStore()
    good = store.publish(make_snapshot(), NOW)
    rogue_ca, real_ca = pki.make_ca("example.org"), pki.make_ca("example.org")
    response = x509_response([(pki.make_svid(rogue_ca, "/web"), real_ca)])  # signed by a CA not in the bundle
    rogue = IdentitySnapshot.from_context(messages.x509_context(response))
    with pytest.raises(NoIdentityError, match="does not verify against our own bundle"):
        store.publish(rogue, NOW)
    assert store.current(NOW) is good


def test_every_source_state_is_documented_in_the_readme_and_the_metric_help() -> None:
    """The states are one enum; files.py once reported two that no document listed."""
    import pathlib

    from prometheus_client.parser import text_string_to_metric_families

    from proxy.operations.metrics import Metrics

    readme = (pathlib.Path(__file__).parents[3] / "README.md").read_text()
    families = {f.name: f for f in text_string_to_metric_families(Metrics(IdentityStore()).render().decode())}
    help_text = families["spiffe_sidecar_identity_source_state"].documentation
    for status in SourceStatus:
        assert f"`{status.value}`" in readme, status
        assert status.value in help_text, status
