"""/ready names the identity source even when asked before the source task has run.

The admin endpoint answers from the moment it is bound, which is before the
event loop starts the Workload API source; the store is labelled with the
source's address when the sidecar is built, so no probe can see an
anonymous "no X.509-SVID yet" (this lost a race 1 run in 7).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from proxy.config.load import load_sidecar_config_text
from proxy.demo.processes import free_port
from proxy.sidecar import Sidecar


def test_ready_names_the_socket_before_the_source_task_has_run(tmp_path: Path) -> None:
    sock = tmp_path / "nobody.sock"
    port = free_port()
    config = load_sidecar_config_text(
        f"identity: {{workload_api: unix://{sock}}}\nadmin: {{listen: 127.0.0.1:{port}}}\n",
        str(tmp_path / "sidecar.yaml"), env={})
    sidecar = Sidecar(config, None)
    sidecar.start_operations()  # no event loop, no source task: only what the constructor recorded
    try:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5)
            raise AssertionError("ready without an SVID")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        identity = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/identity", timeout=5).read())
    finally:
        sidecar.stop_operations()
    assert status == 503 and str(sock).encode() in body, body
    assert identity["source"] == {**identity["source"], "state": "starting", "address": f"unix://{sock}"}
