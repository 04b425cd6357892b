"""The identity client against the project's real agent process (fetch, rotation, JWT, denial)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import trio
from support.agent import REPO, AgentProcess, JsonLines, agent_yaml

from proxy.demo.interpreter import copy_interpreter, interpreter_env
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


#: run_x509_source(want=...) in a workload process; one JSON line per state it reports.
_SOURCE_WANTING = """
import json, sys, time, trio
from proxy.identity.source import Backoff, run_x509_source
from proxy.identity.store import IdentityStore

store = IdentityStore()

def on_state(state):
    held = store.current(time.time())
    print(json.dumps({"state": state.state.value, "error": state.last_error,
                      "serving": held.spiffe_id if held else None}), flush=True)

async def main():
    with trio.move_on_after(float(sys.argv[3])):
        await run_x509_source(sys.argv[1], store, want=sys.argv[2], on_state=on_state,
                              backoff=Backoff(initial=0.05))

trio.run(main)
"""


def test_source_stops_serving_the_wanted_svid_once_the_agent_withdraws_it(short_dir) -> None:
    # The workload runs from its own copy of python, and one of its two entries is pinned
    # to that binary: replacing the file drops that entry at the next renewal, so the
    # agent's next update still carries APP but no longer the SVID the source wants.
    binary = Path(short_dir) / "python-workload"
    copy_interpreter(binary)
    pinned = "spiffe://example.org/pinned"
    uid = f"unix:uid:{os.getuid()}"
    cfg = agent_yaml(Path(short_dir), x509_svid_ttl="3s", entries=[
        (APP, [uid]),
        (pinned, [uid, f"unix:path:{binary}", f"unix:sha256:{hashlib.sha256(binary.read_bytes()).hexdigest()}"])])
    with AgentProcess(cfg, Path(short_dir) / "agent.sock") as agent:
        proc = subprocess.Popen([str(binary), "-c", _SOURCE_WANTING, agent.endpoint, pinned, "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
                                env=interpreter_env())
        lines = JsonLines(proc)
        try:
            deadline = time.monotonic() + 20
            while (line := lines.next(max(0.1, deadline - time.monotonic())))["serving"] != pinned:
                pass
            replacement = binary.with_name("python-new")
            replacement.write_bytes(binary.read_bytes() + b"\0other")
            replacement.chmod(0o755)
            os.replace(replacement, binary)  # the running workload keeps the old inode
            deadline = time.monotonic() + 15
            while "no X.509-SVID matches" not in ((line := lines.next(max(0.1, deadline - time.monotonic())))
                                                  ["error"] or ""):
                pass
            after = [lines.next(timeout=10)] if proc.poll() is None else []
        finally:
            proc.kill()
            proc.wait(10)
    assert f"offered: {APP}" in line["error"], agent.log()
    assert line["serving"] is None and line["state"] == "withdrawn", line  # fails closed, not on a stale SVID
    assert all(later["serving"] is None for later in after), after
