"""The long-running X.509 source: publish, full state, backoff by status code, fail closed."""

from __future__ import annotations

import os
import re
import time

import grpc
import pytest
import trio
from support import pki
from support.grpcio_workload_server import GrpcioWorkloadServer, expired_leaf, x509_response

from proxy.errors import NoIdentityError
from proxy.identity.source import Backoff, run_x509_source, wait_for_first_svid
from proxy.identity.store import IdentityStore, SourceState, SourceStatus
from proxy.spiffe.id import TrustDomain
from proxy.workload_api.grpc import GrpcStatusError, StatusCode

#: Fast retries so backoff tests stay well under a second.
FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.1)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def run_source(address: str, store: IdentityStore, body, **kwargs) -> list[SourceState]:
    """Run the source next to `body(store)`; return every state it reported."""
    states: list[SourceState] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_x509_source(
                address, store, backoff=FAST, on_state=states.append, task_status=task_status, **kwargs))
            await body(store)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return states


def test_publishes_updates_and_withdraws_missing_federated_bundle(serving, ca) -> None:
    async def body(store: IdentityStore) -> None:
        first = await wait_for_first_svid(store, 5)
        assert TrustDomain(name="partner.test") in first.bundles
        serving.push_x509(x509_response([(pki.make_svid(ca, "/web"), ca)]))
        await wait_until(lambda: store.generation == 2)
        assert TrustDomain(name="partner.test") not in store.current(time.time()).bundles

    states = run_source(serving.address, IdentityStore(), body)
    assert states[-1].state is SourceStatus.CONNECTED and states[-1].last_error is None


def test_retries_unavailable_then_connects(serving) -> None:
    serving.fail_next("FetchX509SVID", grpc.StatusCode.UNAVAILABLE, "agent busy", count=3)

    async def body(store: IdentityStore) -> None:
        await wait_for_first_svid(store, 5)

    states = run_source(serving.address, IdentityStore(), body)
    retries = [s for s in states if s.state is SourceStatus.RECONNECTING]
    assert [s.attempt for s in retries] == [1, 2, 3] and "agent busy" in (retries[0].last_error or "")
    assert serving.count_calls("FetchX509SVID") == 4


def test_permission_denied_is_retried_and_withdraws_the_svid(serving) -> None:
    async def body(store: IdentityStore) -> None:
        await wait_for_first_svid(store, 5)
        serving.fail_next("FetchX509SVID", grpc.StatusCode.PERMISSION_DENIED, "binary changed", count=2)
        serving.abort_streams(grpc.StatusCode.PERMISSION_DENIED, "binary changed")
        await wait_until(lambda: store.current(time.time()) is None)
        assert "binary changed" in (store.last_rejection or "")
        await wait_until(lambda: store.current(time.time()) is not None)  # re-admitted after the retries

    run_source(serving.address, IdentityStore(), body)
    assert serving.count_calls("FetchX509SVID") == 4


def test_invalid_argument_is_raised_at_once_without_retry(serving) -> None:
    serving.require_header = True
    serving.fail_next("FetchX509SVID", grpc.StatusCode.INVALID_ARGUMENT, "security header missing")
    store = IdentityStore()

    async def main() -> None:
        await run_x509_source(serving.address, store, backoff=Backoff(initial=5))

    with pytest.raises(GrpcStatusError) as err:
        trio.run(main)
    assert err.value.status == StatusCode.INVALID_ARGUMENT
    assert serving.count_calls("FetchX509SVID") == 1 and store.state.state is SourceStatus.FAILED


def test_a_lost_stream_and_its_return_are_logged_as_warnings(serving, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="spiffe_sidecar")

    async def body(store: IdentityStore) -> None:
        await wait_for_first_svid(store, 5)
        assert not [r for r in caplog.records if r.levelname == "WARNING"], "a warning before anything went wrong"
        serving.fail_next("FetchX509SVID", grpc.StatusCode.UNAVAILABLE, "restarting", count=3)
        serving.abort_streams(grpc.StatusCode.UNAVAILABLE, "restarting")
        await wait_until(lambda: serving.count_calls("FetchX509SVID") >= 5 and store.state.state is SourceStatus.CONNECTED)

    run_source(serving.address, IdentityStore(), body)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # one on the drop, one on the return: not one per retry
    assert "stream lost" in warnings[0] and "restarting" in warnings[0] and "expires in" in warnings[0]
    assert re.search(r"reconnected after \d+\.\ds \(\d+ attempts\)", warnings[1]), warnings[1]


def test_unavailable_mid_stream_keeps_the_last_good_svid(serving) -> None:
    async def body(store: IdentityStore) -> None:
        good = await wait_for_first_svid(store, 5)
        serving.fail_next("FetchX509SVID", grpc.StatusCode.UNAVAILABLE, "restarting", count=5)
        serving.abort_streams(grpc.StatusCode.UNAVAILABLE, "restarting")
        await wait_until(lambda: store.state.state is SourceStatus.RECONNECTING)
        assert store.current(time.time()) is good
        await wait_until(lambda: serving.count_calls("FetchX509SVID") >= 7 and store.state.state is SourceStatus.CONNECTED)

    run_source(serving.address, IdentityStore(), body)


def test_invalid_update_keeps_last_good_and_the_stream(serving, ca) -> None:
    async def body(store: IdentityStore) -> None:
        good = await wait_for_first_svid(store, 5)
        serving.push_x509(x509_response([(expired_leaf(ca), ca)]))
        await wait_until(lambda: "already expired" in (store.state.last_error or ""))
        assert store.current(time.time()) is good
        serving.push_x509(x509_response([(pki.make_svid(ca, "/web"), ca)]))
        await wait_until(lambda: store.generation == 2)

    run_source(serving.address, IdentityStore(), body)
    assert serving.count_calls("FetchX509SVID") == 1  # one stream throughout


def test_redaction_withdraws_our_identity(serving) -> None:
    async def body(store: IdentityStore) -> None:
        await wait_for_first_svid(store, 5)
        serving.push_x509(x509_response([]))
        await wait_until(lambda: store.current(time.time()) is None)
        assert store.state.state is SourceStatus.WITHDRAWN

    run_source(serving.address, IdentityStore(), body)


def test_connects_once_the_agent_starts_later(short_dir, ca) -> None:
    path = f"{short_dir}/late.sock"
    started: list[GrpcioWorkloadServer] = []

    async def body(store: IdentityStore) -> None:
        await wait_until(lambda: store.state.attempt >= 2)
        assert "cannot connect" in (store.state.last_error or "")
        late = GrpcioWorkloadServer(path)  # grpcio listens as soon as the port is added
        late.push_x509(x509_response([(pki.make_svid(ca, "/web"), ca)]))
        started.append(late.start())
        await wait_for_first_svid(store, 5)

    try:
        run_source(f"unix://{path}", IdentityStore(), body)
    finally:
        for late in started:
            late.stop()


def test_first_svid_timeout_says_what_to_check(serving) -> None:
    serving.fail_next("FetchX509SVID", grpc.StatusCode.PERMISSION_DENIED,
                      "no identity issued; observed selectors: unix:uid:4242", count=1000)

    async def body(store: IdentityStore) -> None:
        with pytest.raises(NoIdentityError) as err:
            await wait_for_first_svid(store, 0.3)
        text = str(err.value)
        assert "no X.509-SVID within 0.3s" in text and "answered and refused this process" in text
        assert "observed selectors: unix:uid:4242" in text and f"unix:uid:{os.getuid()}" in text
        assert "socket" not in text  # the agent answered: "is an agent listening?" does not apply

    run_source(serving.address, IdentityStore(), body)


def test_first_svid_timeout_when_the_socket_is_missing(short_dir) -> None:
    async def body(store: IdentityStore) -> None:
        with pytest.raises(NoIdentityError, match="does NOT exist") as err:
            await wait_for_first_svid(store, 0.2)
        assert "registration entry" not in str(err.value)  # nothing answered: entries are not the question

    run_source(f"unix://{short_dir}/missing.sock", IdentityStore(), body)


def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    b = Backoff(initial=0.1, maximum=5.0, jitter=0.2)
    assert [round(b.delay(n, 0.5), 3) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert b.delay(1, 0.0) == pytest.approx(0.08) and b.delay(1, 0.999999) == pytest.approx(0.12)


def test_wait_for_first_svid_wakes_on_a_publication_from_another_thread(ca) -> None:
    import threading

    from proxy.identity import messages
    from proxy.identity.snapshot import IdentitySnapshot

    store = IdentityStore()
    snapshot = IdentitySnapshot.from_context(messages.x509_context(x509_response([(pki.make_svid(ca, "/t"), ca)])))
    timer = threading.Timer(0.1, lambda: store.publish(snapshot, time.time()))

    async def main() -> IdentitySnapshot:
        timer.start()
        return await wait_for_first_svid(store, 5)

    started = time.monotonic()
    assert trio.run(main).spiffe_id == "spiffe://example.org/t"
    assert time.monotonic() - started < 2
