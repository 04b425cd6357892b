"""The demo scenario: agent, backend and frontend behind sidecars, three checks.

How the agent tells the sidecars apart: all of them run as the same user
here, so uid/gid selectors cannot distinguish them. Each sidecar is started
from its own copy of the Python interpreter (``bin/<name>-sidecar``), and
its registration entry selects ``unix:path:`` of that copy: the agent reads
the caller's pid from the Unix socket (SO_PEERCRED), then /proc/<pid>/exe,
exactly as SPIRE's unix workload attestor does. The copies are
byte-identical, so ``unix:sha256`` would not tell them apart; a real
deployment pins distinct binaries (path and sha256) or distinct uids.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from proxy.demo import http_check
from proxy.demo.apps import HelloBackend, http_get
from proxy.demo.interpreter import copy_interpreter
from proxy.demo.processes import SidecarProcess, free_port

TD = "example.org"
FRONTEND, BACKEND, BATCH = (f"spiffe://{TD}/{n}" for n in ("frontend", "backend", "batch"))
POLICY = f"""\
policies:
  backend-api:
    - name: no-batch
      deny: [{BATCH}]
    - name: frontend-reads
      allow: [{FRONTEND}]
""" + http_check.POLICY.format(td=TD)


@dataclass
class DemoOptions:
    """Knobs of the demo (the CLI flags)."""

    svid_ttl: float = 6.0
    rotations: int = 2
    rotation_timeout: float = 30.0
    runtime: str | None = None  # None: backend on trio, frontend on uvloop (both runtimes shown)
    engine: str = "auto"  # auto | python | fastpath
    out: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


class _AgentThread:
    """The embedded agent in its own thread (its own trio.run); ``stop`` cancels and joins."""

    def __init__(self, config: Any) -> None:
        from proxy.agent.server import serve_agent
        from proxy.runtime.threads import TrioThread

        self.socket_path = Path(config.socket_path)
        self._thread = TrioThread(functools.partial(serve_agent, config), name="agent")

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.socket_path.exists():
            if self._thread.error is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not start: {self._thread.error}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._thread.stop()


class Demo:
    """One run of the scenario in a temporary directory (see run_demo)."""

    def __init__(self, opts: DemoOptions, workdir: Path) -> None:
        self.opts, self.dir, self.say = opts, workdir, opts.out
        self.sidecars: dict[str, SidecarProcess] = {}
        self.backend_app: HelloBackend | None = None
        self.agent: _AgentThread | None = None
        self.bin_dir: Path | None = None
        self.ports = {name: free_port() for name in ("backend-in", "frontend-out", "batch-out", "backend-http-in",
                                                     "frontend-http-out")}

    # --- set-up ------------------------------------------------------------

    def interpreter_copy(self, name: str) -> str:
        """A private copy of this interpreter: its path is the sidecar's unix:path selector."""
        if self.bin_dir is None:
            self.bin_dir = self._executable_dir()
        target = self.bin_dir / f"{name}-sidecar"
        return str(copy_interpreter(target))

    def _executable_dir(self) -> Path:
        """The work dir's bin/, or one under the user's cache when the temp dir is mounted noexec."""
        for candidate in (self.dir / "bin", Path.home() / ".cache" / f"spiffe-sidecar-demo-{os.getpid()}"):
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / "probe"
            copy_interpreter(probe)
            try:
                subprocess.run([str(probe), "-S", "-c", "pass"], check=True, timeout=30,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                return candidate
            except (OSError, subprocess.SubprocessError):
                continue
            finally:
                probe.unlink(missing_ok=True)
        raise RuntimeError("cannot run a copied interpreter from the temp dir or ~/.cache (noexec mounts?)")

    def start_agent(self, interpreters: dict[str, str]) -> None:
        from proxy.agent.config import agent_config

        entries = [(f"spiffe://{TD}/{name}", [f"unix:path:{path}"]) for name, path in interpreters.items()]
        config = agent_config(socket_path=self.dir / "agent.sock", trust_domain=TD, entries=entries,
                              x509_svid_ttl=self.opts.svid_ttl, state_dir=self.dir / "state")
        self.agent = _AgentThread(config)
        self.agent.start()

    def sidecar_yaml(self, name: str, runtime: str, listener: str) -> Path:
        path = self.dir / f"{name}-sidecar.yaml"
        path.write_text(f"identity: {{workload_api: unix://{self.dir / 'agent.sock'}}}\n"
                        f"runtime: {runtime}\n{listener}")
        return path

    def start_sidecars(self, interpreters: dict[str, str]) -> None:
        (self.dir / "policy.yaml").write_text(POLICY)
        rt = self.opts.runtime
        back = self.sidecar_yaml("backend", rt or "trio",
                                 f"policy_file: policy.yaml\ninbound:\n  - name: api\n"
                                 f"    listen: 127.0.0.1:{self.ports['backend-in']}\n"
                                 f"    forward_to: 127.0.0.1:{self.backend_app.port}\n"  # type: ignore[union-attr]
                                 f"    policy: backend-api\n"
                                 + http_check.inbound_yaml(self.ports["backend-http-in"],
                                                           self.backend_app.port))  # type: ignore[union-attr]
        configs = {"backend": back}
        for name, runtime in (("frontend", rt or "uvloop"), ("batch", rt or "trio")):
            configs[name] = self.sidecar_yaml(name, runtime,
                                              f"outbound:\n  - name: backend\n"
                                              f"    listen: 127.0.0.1:{self.ports[name + '-out']}\n"
                                              f"    connect_to: 127.0.0.1:{self.ports['backend-in']}\n"
                                              f"    expect: {BACKEND}\n"
                                              + (http_check.outbound_yaml(self.ports["frontend-http-out"],
                                                                          self.ports["backend-http-in"], BACKEND)
                                                 if name == "frontend" else ""))
        env = {"python": {"SPIFFE_SIDECAR_NO_EXTENSIONS": "1"},
               "fastpath": {"SPIFFE_SIDECAR_REQUIRE_EXTENSIONS": "1"}}.get(self.opts.engine, {})
        for name, config in configs.items():
            self.sidecars[name] = SidecarProcess(name, config, self.dir, python=interpreters[name], env=env).start()
        for sidecar in self.sidecars.values():
            sidecar.wait_ready(30.0)

    def set_up(self) -> None:
        names = ("frontend", "backend", "batch")
        interpreters = {name: self.interpreter_copy(name) for name in names}
        self.say(f"[setup] work dir {self.dir}")
        self.say("[setup] each sidecar runs from its own copy of the interpreter; the agent attests the caller of")
        self.say("        the Workload API (SO_PEERCRED -> /proc/<pid>/exe) and matches entries on unix:path:")
        self.start_agent(interpreters)
        for name, path in interpreters.items():
            self.say(f"          spiffe://{TD}/{name:<8}  <-  unix:path:{path}")
        self.say(f"[setup] embedded agent on {self.dir / 'agent.sock'}, X.509-SVID TTL {self.opts.svid_ttl:g}s "
                 "(renewed at half-life)")
        self.backend_app = HelloBackend("backend")
        self.say(f"[setup] backend app (plain HTTP) on 127.0.0.1:{self.backend_app.port}")
        self.start_sidecars(interpreters)
        for name, sidecar in self.sidecars.items():
            ready = next(line for line in sidecar.log().splitlines() if " ready: " in line)
            self.say(f"[setup] {name} sidecar (pid {sidecar.pid}) {ready.split(' ready: ', 1)[1]}")

    def tear_down(self) -> None:
        for sidecar in self.sidecars.values():
            sidecar.stop()
        if self.backend_app is not None:
            self.backend_app.close()
        if self.agent is not None:
            self.agent.stop()
        if self.bin_dir is not None and not self.bin_dir.is_relative_to(self.dir):
            shutil.rmtree(self.bin_dir, ignore_errors=True)

    # --- checks ------------------------------------------------------------

    def wait_record(self, sidecar: str, predicate: Callable[[dict[str, Any]], bool],
                    timeout: float = 5.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in reversed(self.sidecars[sidecar].records()):
                if predicate(record):
                    return dict(record)
            time.sleep(0.05)
        return None

    def check_authorized_call(self) -> bool:
        self.say("\n(a) frontend -> its sidecar -> mTLS -> backend's sidecar -> backend")
        response = http_get(self.ports["frontend-out"], "/orders/42")
        out = self.wait_record("frontend", lambda r: r["listener"] == "backend" and r["decision"] == "allow")
        inb = self.wait_record("backend", lambda r: r["peer_id"] == FRONTEND and r["decision"] == "allow")
        ok = response.status == 200 and "hello from backend" in response.body and out is not None \
            and inb is not None and out["peer_id"] == BACKEND
        self.say(f"    HTTP {response.status or response.error}: {response.body.strip()}")
        if out is not None and inb is not None:
            self.say(f"    frontend sidecar verified the server as {out['peer_id']} (expect matched)")
            self.say(f"    backend sidecar verified the client as {inb['peer_id']}, allowed by rule "
                     f"{inb['rule']!r} ({inb['tls_version']}, {inb['cipher']})")
        self.say(f"    => {'PASS' if ok else 'FAIL'}: authorized call through mTLS")
        return ok

    def check_denied_call(self) -> bool:
        self.say(f"\n(b) batch -> its sidecar -> mTLS as {BATCH} -> backend's sidecar")
        served_before = self.backend_app.served  # type: ignore[union-attr]
        response = http_get(self.ports["batch-out"], "/orders/42")
        record = self.wait_record("backend", lambda r: r["peer_id"] == BATCH)
        ok = (response.status == 0 and record is not None and record["decision"] == "deny"
              and record["rule"] == "no-batch" and self.backend_app.served == served_before)  # type: ignore[union-attr]
        self.say(f"    batch got: {response.error or f'HTTP {response.status}'}")
        if record is not None:
            self.say(f"    backend sidecar: decision={record['decision']} rule={record['rule']!r} "
                     f"reason={record['reason']} close={record['close_reason']}")
            self.say(f"    why: {record['detail']}")
            self.say("    record: " + json.dumps({k: record[k] for k in ("listener", "peer_id", "decision", "rule",
                                                                         "reason", "bytes_in", "close_reason")}))
        self.say(f"    the backend app saw {self.backend_app.served - served_before} request(s) from batch")  # type: ignore[union-attr]
        self.say(f"    => {'PASS' if ok else 'FAIL'}: unauthorized workload denied before reaching the app")
        return ok

    def generations(self) -> dict[str, int]:
        return {name: self.sidecars[name].count("identity generation") for name in ("frontend", "backend")}

    def check_rotation_under_load(self) -> bool:
        want = self.opts.rotations
        self.say(f"\n(c) continuous requests while both sidecars rotate their SVIDs at least {want} times")
        start = seen = self.generations()
        load = _Load(self.ports["frontend-out"], workers=2)
        deadline = time.monotonic() + self.opts.rotation_timeout
        while time.monotonic() < deadline and not all(seen[n] - start[n] >= want for n in seen):
            time.sleep(0.1)
            now = self.generations()
            for name in (n for n in now if now[n] > seen[n]):
                self.say(f"    {name} sidecar rotated to generation {now[name]} "
                         f"({load.requests} requests so far, {load.failures} failed)")
            seen = now
        load.stop()
        rotated = {n: seen[n] - start[n] for n in seen}
        ok = load.failures == 0 and load.requests > 0 and all(v >= want for v in rotated.values())
        self.say(f"    {load.requests} requests, {load.failures} failed; rotations: "
                 + ", ".join(f"{n} {v}" for n, v in rotated.items()))
        for error in load.errors[:3]:
            self.say(f"    failure: {error}")
        self.say(f"    => {'PASS' if ok else 'FAIL'}: SVID rotation under live traffic with no failed request")
        return ok


class _Load:
    """Back-to-back GETs (one connection each) from a few threads until ``stop``."""

    def __init__(self, port: int, workers: int) -> None:
        self.port = port
        self.requests = self.failures = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            r = http_get(self.port, "/load")
            with self._lock:
                self.requests += 1
                if r.status != 200:
                    self.failures += 1
                    self.errors.append(r.error or f"HTTP {r.status}")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def run_demo(opts: DemoOptions) -> int:
    """Run the whole demo; 0 only if every check passes. Cleans up on every path."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spiffe-sidecar-demo-") as tmp:
        demo = Demo(opts, Path(tmp))
        results: list[bool] = []
        try:
            demo.set_up()
            results = [demo.check_authorized_call(), demo.check_denied_call(), demo.check_rotation_under_load(),
                       http_check.check_paths(demo)]
        except (RuntimeError, OSError) as exc:
            opts.out(f"\ndemo failed during set-up: {exc}")
        finally:
            if not all(results) or not results:
                for sidecar in demo.sidecars.values():
                    opts.out(f"\n--- {sidecar.name} sidecar log (last lines) ---")
                    opts.out("\n".join(sidecar.log().splitlines()[-15:]))
            demo.tear_down()
    passed = bool(results) and all(results)
    opts.out(f"\n{'ALL CHECKS PASSED' if passed else 'DEMO FAILED'} in {time.monotonic() - started:.1f}s "
             "(agent, sidecars and apps stopped; temporary files removed)")
    return 0 if passed else 1
