"""The identity client against the project's real agent process (fetch, rotation, JWT, denial)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import trio
from support.agent import AgentProcess, agent_yaml

from proxy.errors import NoIdentityError
from proxy.identity.client import open_workload_api
from proxy.identity.source import Backoff, run_x509_source, wait_for_first_svid
from proxy.identity.store import IdentityStore

APP = "spiffe://example.org/app"


@pytest.fixture(scope="module")
def agent():
    """One agent for the module (starting a process costs seconds on a busy machine)."""
    directory = Path(tempfile.mkdtemp(prefix="wla-"))
    cfg = agent_yaml(directory, entries=[(APP, [f"unix:uid:{os.getuid()}"])], x509_svid_ttl="2s")
    try:
        with AgentProcess(cfg, directory / "agent.sock") as running:
            yield running
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_source_sees_two_rotations_from_the_agent(agent) -> None:
    store = IdentityStore()
    generations: list[tuple[int, float]] = []
    store.subscribe(lambda s: generations.append((s.generation, s.not_after)) if s else None)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_x509_source(agent.endpoint, store, backoff=Backoff(initial=0.05)))
            first = await wait_for_first_svid(store, 10)
            assert first.spiffe_id == APP and first.trust_domains == ("example.org",)
            with trio.fail_after(10):
                while store.generation < 3:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    trio.run(main)
    expiries = [not_after for _, not_after in generations]
    assert expiries == sorted(expiries) and len(set(expiries)) == len(expiries), agent.log()


def test_fetch_and_jwt_round_trip_through_the_agent(agent) -> None:
    async def main():
        async with open_workload_api(agent.endpoint) as client:
            context = await client.fetch_x509_context(timeout=10)
            token = await client.fetch_jwt_svid("spiffe://example.org/db", timeout=10)
            valid = await client.validate_jwt_svid(token.token, "spiffe://example.org/db", timeout=10)
            return context, token, valid

    context, token, valid = trio.run(main)
    assert str(context.default_svid.spiffe_id) == APP
    assert str(token.spiffe_id) == APP and token.expiry > time.time()
    assert str(valid.spiffe_id) == APP


def test_unregistered_caller_gets_a_diagnostic_with_observed_selectors(short_dir) -> None:
    cfg = agent_yaml(Path(short_dir), entries=[(APP, ["unix:uid:987654"])])
    with AgentProcess(cfg, Path(short_dir) / "agent.sock") as agent:
        store = IdentityStore()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: run_x509_source(agent.endpoint, store, backoff=Backoff(initial=0.05)))
                with pytest.raises(NoIdentityError) as err:
                    await wait_for_first_svid(store, 1.0)
                nursery.cancel_scope.cancel()
            text = str(err.value)
            assert "PERMISSION_DENIED" in text and "observed selectors" in text

        trio.run(main)
