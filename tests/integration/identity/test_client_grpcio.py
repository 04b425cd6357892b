"""The project's h2-based Workload API client against grpcio's server: interop on a real socket."""

from __future__ import annotations

import contextlib

import grpc
import pytest
import trio
from support import pki
from support.grpcio_workload_server import GrpcioWorkloadServer, x509_response

from proxy.identity.client import open_workload_api
from proxy.spiffe.id import TrustDomain
from proxy.workload_api.grpc import GrpcStatusError, StatusCode

PARTNER = TrustDomain(name="partner.test")


def test_fetches_x509_context_with_the_security_header(serving) -> None:
    async def main():
        async with open_workload_api(serving.address) as client:
            return await client.fetch_x509_context(timeout=5)

    context = trio.run(main)
    assert str(context.default_svid.spiffe_id) == "spiffe://example.org/web"
    assert {td.name for td in context.bundles} == {"example.org", "partner.test"}
    rpc, metadata = serving.calls[0]
    assert rpc == "FetchX509SVID" and ("workload.spiffe.io", "true") in metadata


def test_watch_sees_rotation_and_federated_bundle_withdrawal(serving, ca) -> None:
    async def main():
        seen = []
        async with open_workload_api(serving.address) as client:
            async with contextlib.aclosing(client.watch_x509_context()) as updates:
                async for context in updates:
                    seen.append(context)
                    if len(seen) == 1:
                        serving.push_x509(x509_response([(pki.make_svid(ca, "/web"), ca)]))
                    else:
                        break
        return seen

    first, second = trio.run(main)
    assert PARTNER in first.bundles and PARTNER not in second.bundles
    assert first.default_svid.chain_der != second.default_svid.chain_der


def test_jwt_fetch_validate_and_bundles(serving) -> None:
    async def main():
        async with open_workload_api(serving.address) as client:
            svid = await client.fetch_jwt_svid("spiffe://example.org/db", timeout=5)
            valid = await client.validate_jwt_svid(svid.token, "spiffe://example.org/db")
            with pytest.raises(GrpcStatusError) as refused:
                await client.validate_jwt_svid(svid.token, "someone-else")
            bundles = await client.fetch_jwt_bundles(timeout=5)
            return svid, valid, refused.value, bundles

    svid, valid, refused, bundles = trio.run(main)
    assert str(svid.spiffe_id) == "spiffe://example.org/workload" and svid.audience == ("spiffe://example.org/db",)
    assert valid.spiffe_id == svid.spiffe_id and valid.claims["aud"] == ["spiffe://example.org/db"]
    assert refused.status == StatusCode.INVALID_ARGUMENT
    assert set(bundles) == {TrustDomain(name="example.org")}


def test_fetch_x509_bundles(serving) -> None:
    async def main():
        async with open_workload_api(serving.address) as client:
            return await client.fetch_x509_bundles(timeout=5)

    assert {td.name for td in trio.run(main)} == {"example.org", "partner.test"}


def test_permission_denied_carries_the_server_message(serving) -> None:
    serving.fail_next("FetchX509SVID", grpc.StatusCode.PERMISSION_DENIED, "no identity issued; observed unix:uid:0")

    async def main():
        async with open_workload_api(serving.address) as client:
            await client.fetch_x509_context(timeout=5)

    with pytest.raises(GrpcStatusError) as err:
        trio.run(main)
    assert err.value.status == StatusCode.PERMISSION_DENIED and "observed unix:uid:0" in err.value.message


def test_unreachable_socket_is_unavailable_naming_the_address(short_dir) -> None:
    address = f"unix://{short_dir}/nobody.sock"

    async def main():
        async with open_workload_api(address) as client:
            await client.fetch_x509_context(timeout=5)

    with pytest.raises(GrpcStatusError) as err:
        trio.run(main)
    assert err.value.status == StatusCode.UNAVAILABLE and address in err.value.message


def test_unary_deadline_is_enforced(server) -> None:
    async def main():  # the server has no SVID yet: the stream stays silent
        async with open_workload_api(server.address) as client:
            await client.fetch_x509_context(timeout=0.3)

    with pytest.raises(GrpcStatusError) as err:
        trio.run(main)
    assert err.value.status == StatusCode.DEADLINE_EXCEEDED


def test_closing_the_client_cancels_a_running_watch(server) -> None:
    async def main():
        client = await open_workload_api(server.address).__aenter__()
        outcome = {}

        async def watch():
            try:
                async for _ in client.watch_x509_context():
                    pass
            except GrpcStatusError as exc:
                outcome["status"] = exc.status

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            with trio.fail_after(5):  # close only once the watch is really running on the server
                while server.count_calls("FetchX509SVID") == 0 and not outcome:
                    await trio.sleep(0.01)
            await client.aclose()
        return outcome

    assert trio.run(main) == {"status": StatusCode.CANCELLED}


def test_environment_variable_is_the_default_address(serving, monkeypatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", serving.address)

    async def main():
        async with open_workload_api() as client:
            return await client.fetch_x509_context(timeout=5)

    assert str(trio.run(main).default_svid.spiffe_id) == "spiffe://example.org/web"


def test_tcp_address_reaches_a_tcp_workload_api(ca) -> None:
    tcp = GrpcioWorkloadServer(None)
    tcp.push_x509(x509_response([(pki.make_svid(ca, "/over-tcp"), ca)]))
    tcp.start()

    async def main():
        async with open_workload_api(tcp.address) as client:
            return await client.fetch_x509_context(timeout=5)

    try:
        assert tcp.address.startswith("tcp://127.0.0.1:")
        assert str(trio.run(main).default_svid.spiffe_id) == "spiffe://example.org/over-tcp"
    finally:
        tcp.stop()


def test_jwt_bundle_watch_follows_full_state(serving) -> None:
    from support.grpcio_workload_server import JwtIssuer

    partner = JwtIssuer("partner.test")

    async def main():
        seen = []
        async with open_workload_api(serving.address) as client:
            async with contextlib.aclosing(client.watch_jwt_bundles()) as updates:
                async for bundles in updates:
                    seen.append({td.name for td in bundles})
                    if len(seen) == 1:
                        serving.push_jwt_bundles({**serving.jwt_bundles, "spiffe://partner.test": partner.jwks()})
                    elif len(seen) == 2:
                        serving.push_jwt_bundles({"spiffe://partner.test": partner.jwks()})
                    else:
                        return seen

    assert trio.run(main) == [{"example.org"}, {"example.org", "partner.test"}, {"partner.test"}]
