"""Start a real sidecar process with a config, wait for it to be ready, read its records, stop it.

    from support.sidecar import SidecarHarness, Identity

    ident = Identity.mint(tmp_path, ca, "/backend")
    sc = SidecarHarness(tmp_path, runtime="trio", engine="python", identity=ident,
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}", "forward_to": ..., "policy": "api"}],
                        policy={"api": [{"name": "r", "allow": ["spiffe://example.org/frontend"]}]})
    with sc:                          # start + wait_ready; stop on exit (always)
        ...
        sc.wait_record(lambda r: r["peer_id"] == ...)

The four scenario combinations are ``COMBOS`` (runtime x engine, support/combos.py); the engine
is chosen in the subprocess by SPIFFE_SIDECAR_NO_EXTENSIONS=1 (python) or
SPIFFE_SIDECAR_REQUIRE_EXTENSIONS=1 (fastpath: fail rather than fall back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from dataclasses import field
from typing import Any, Callable, Iterator


from proxy.connection.close import ConnectionRecord
from proxy.connection.machine import ConnectionSpec, Direction
from proxy.connection.verify import check_expected_peer
from proxy.identity.swap import ContextPair
from proxy.policy.match import compile_matcher
from proxy.runtime.base import DataPlane, ListenerPlan
from proxy.runtime.sockets import open_listening_socket
from proxy.tls.material import TlsMaterial

from proxy.demo.processes import SidecarProcess

from support import pki
from support.combos import COMBOS, ENGINES, RUNTIMES, engine_module, fastpath_available  # noqa: F401 (re-exported)

FRONTEND, BACKEND = "spiffe://example.org/frontend", "spiffe://example.org/backend"
ENGINE_ENV = {"python": {"SPIFFE_SIDECAR_NO_EXTENSIONS": "1"},
              "fastpath": {"SPIFFE_SIDECAR_REQUIRE_EXTENSIONS": "1", "SPIFFE_SIDECAR_NO_EXTENSIONS": "0"}}


@dataclass(frozen=True)
class Identity:
    """PEM files of one SVID and the bundles a files identity source reads."""

    cert: Path
    key: Path
    bundle: Path
    federated: dict[str, Path]

    @classmethod
    def mint(cls, directory: Path, ca: pki.Ca, spiffe_id: str, *, federated: dict[str, pki.Ca] | None = None,
             **svid_kw: Any) -> Identity:
        name = spiffe_id.strip("/").replace("/", "_").replace(":", "_")
        leaf = pki.make_svid(ca, spiffe_id, **svid_kw)
        cert, key = leaf.write_pem(directory, name)
        bundle = directory / f"{ca.trust_domain}.bundle.pem"
        bundle.write_bytes(pki.pem(ca.cert))
        fed = {}
        for td, other in (federated or {}).items():
            fed[td] = directory / f"{td}.bundle.pem"
            fed[td].write_bytes(pki.pem(other.cert))
        return cls(Path(cert), Path(key), bundle, fed)

    def yaml(self) -> dict[str, Any]:
        files: dict[str, Any] = {"cert": str(self.cert), "key": str(self.key), "bundle": str(self.bundle)}
        if self.federated:
            files["federated_bundles"] = {td: str(p) for td, p in self.federated.items()}
        return {"files": files}


class SidecarHarness:
    """One sidecar subprocess built from keyword config (see the module docstring)."""

    _count = 0

    def __init__(self, directory: Path, *, runtime: str, engine: str, identity: Identity | dict[str, Any],
                 inbound: list[dict[str, Any]] = (), outbound: list[dict[str, Any]] = (),  # type: ignore[assignment]
                 policy: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
                 name: str | None = None, python: str | None = None, drain_timeout: str = "1s",
                 extra: dict[str, Any] | None = None, admin: bool = False) -> None:
        SidecarHarness._count += 1
        self.runtime, self.engine = runtime, engine
        self.name = name or f"sidecar{SidecarHarness._count}"
        doc: dict[str, Any] = {"identity": identity.yaml() if isinstance(identity, Identity) else identity,
                               "runtime": runtime, "log": {"level": "debug"}, "drain_timeout": drain_timeout}
        if inbound:
            doc["inbound"] = list(inbound)
        self.policy_path = directory / f"{self.name}.policy.yaml"
        if inbound or policy:
            self.policy_path.write_text(json.dumps({"policies": policy or {}}))
            doc["policy_file"] = str(self.policy_path)
        self.admin_port: int | None = None
        if admin:
            from support.net import free_port

            self.admin_port = free_port()
            doc["admin"] = {"listen": f"127.0.0.1:{self.admin_port}"}
        if outbound:
            doc["outbound"] = list(outbound)
        if limits:
            doc["limits"] = limits
        doc.update(extra or {})  # e.g. {"transparent": {...}}
        self.config = directory / f"{self.name}.yaml"
        self.config.write_text(json.dumps(doc, indent=1))
        self.process = SidecarProcess(self.name, self.config, directory, python=python, env=ENGINE_ENV[engine])

    def __enter__(self) -> SidecarHarness:
        self.process.start()
        try:
            self.wait_ready()
        except BaseException:
            self.process.stop()
            raise
        return self

    def wait_ready(self) -> None:
        """Wait for the ready line, and check it names the runtime and engine asked for."""
        self.process.wait_ready(30.0)
        want = f"runtime {self.runtime}, engine {self.engine}"
        assert want in self.log(), f"{self.name} is not running {want}:\n{self.log()}"

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    def stop(self) -> int | None:
        """SIGTERM (then SIGKILL after a bound); the exit code."""
        return self.process.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.process.log()

    def records(self) -> list[dict[str, Any]]:
        return self.process.records()

    def reauth_records(self) -> list[dict[str, Any]]:
        return self.process.reauth_records()

    def wait_record(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, *,
                    requests: bool = False) -> dict[str, Any]:
        """The newest record matching ``predicate`` (an HTTP request record with ``requests``);
        AssertionError with the log on timeout."""
        deadline = time.monotonic() + timeout
        source = self.process.request_records if requests else self.records
        while time.monotonic() < deadline:
            for record in reversed(source()):
                if predicate(record):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no matching record from {self.name} in {timeout:g}s; records: {self.records()[-5:]}"
                             f"\nlog:\n{self.log()[-3000:]}")

    # --- operations: the admin endpoint, signals, policy edits ----------------------

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` from the admin endpoint: (status, body)."""
        import http.client

        assert self.admin_port is not None, "start the harness with admin=True"
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get_json(self, path: str) -> Any:
        """The admin endpoint's JSON answer at ``path`` (any status)."""
        return json.loads(self.get(path)[1])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """/metrics parsed by prometheus-client's own parser: (sample name, sorted labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        status, body = self.get("/metrics")
        assert status == 200, body
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(body.decode()) for sample in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= set(ls))

    def write_policy(self, text: str) -> None:
        """Replace the policy file atomically (as a ConfigMap update or an editor's save-by-rename does)."""
        tmp = self.policy_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.policy_path)

    def edit_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the config document and replace the file atomically."""
        doc = json.loads(self.config.read_text())
        change(doc)
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.config)

    def signal(self, signum: int) -> None:
        import os

        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` seconds (AssertionError with the log otherwise)."""
        import subprocess

        assert self.process.proc is not None
        try:
            return int(self.process.proc.wait(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:g}s:\n{self.log()[-3000:]}") from None

    def rss_kib(self) -> int:
        """The sidecar's resident set size (KiB), from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


# --- clients and waits for operations tests ----------------------------------------


class Peer:
    """A plain Python ``ssl`` mTLS client with one SVID, verifying the sidecar against the bundle."""

    def __init__(self, directory: Path, ca: pki.Ca, spiffe_id: str) -> None:
        ident = Identity.mint(directory, ca, spiffe_id.removeprefix("spiffe://example.org"))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False  # SPIFFE: the URI SAN, not a host name, names the server
        self.context.load_verify_locations(cafile=str(ident.bundle))
        self.context.load_cert_chain(str(ident.cert), str(ident.key))

    def connect(self, port: int, timeout: float = 5.0) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        return self.context.wrap_socket(raw)

    def echo(self, port: int, payload: bytes = b"ping") -> bool:
        """True when a fresh connection echoes ``payload`` back (False when refused by policy)."""
        try:
            with self.connect(port) as tls:
                tls.sendall(payload)
                return read_exactly(tls, len(payload)) == payload
        except (OSError, ssl.SSLError):
            return False


def read_exactly(tls: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = tls.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def eventually(check: Any, timeout: float, what: str) -> float:
    """Seconds until ``check()`` is true (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout:g}s: {what}")



@contextlib.contextmanager
def running(*sidecars: SidecarHarness) -> Iterator[tuple[SidecarHarness, ...]]:
    """Start several sidecars at once (start-up dominates test time), wait for all, stop all."""
    try:
        for sc in sidecars:
            sc.process.start()
        for sc in sidecars:
            sc.wait_ready()
        yield sidecars
    finally:
        for sc in sidecars:
            sc.process.stop()


# --- an in-process data plane (integration tests) ------------------------------------



def material(ca: pki.Ca, path: str, generation: int = 1, **kw: Any) -> TlsMaterial:
    return pki.tls_material(pki.make_svid(ca, path, **kw), {ca.trust_domain: (ca.der,)}, generation=generation)


@dataclass
class Allow:
    """A minimal policy decision (the real evaluator is tested with the policy)."""

    allowed: bool
    rule: str | None
    reason: Any = None
    explanation: str = ""


def allow_frontend(peer: str) -> Allow:
    return Allow(True, "frontend") if peer == FRONTEND else Allow(False, None, None, f"{peer} not allowed")


@dataclass
class Plane:
    """A running in-process data plane: ``port(name)``, ``records``, and the knobs tests turn."""

    engine: Any
    runtime: str
    relay_on_thread: bool = True
    records: list[ConnectionRecord] = field(default_factory=list)
    data_plane: DataPlane | None = None
    plans: dict[str, ListenerPlan] = field(default_factory=dict)
    contexts: dict[str, Any] = field(default_factory=dict)  # "server"/"client" -> context or None
    _stop: Callable[[], None] | None = None
    _thread: threading.Thread | None = None

    def port(self, name: str) -> int:
        return int(self.plans[name].sock.getsockname()[1])

    def add(self, name: str, direction: Direction, upstream: int, *, authorize: Any = allow_frontend,
            session_key: str | None = None, upstream_host: str = "127.0.0.1", **limits: Any) -> None:
        sock = open_listening_socket("127.0.0.1", 0)
        spec = ConnectionSpec(listener=name, direction=direction, upstream_host=upstream_host, upstream_port=upstream,
                              authorize=authorize, **limits)
        side = "server" if direction is Direction.INBOUND else "client"
        self.plans[name] = ListenerPlan(name=name, direction=direction, sock=sock, spec=lambda dst: spec,
                                        context=lambda: self._pair(side), session_key=session_key)

    def _pair(self, side: str) -> ContextPair | None:
        """The listener's side as a ContextPair (None fails closed, as before the first SVID)."""
        ctx = self.contexts.get(side)
        if ctx is None:
            return None
        return ContextPair(server=self.contexts.get("server"), client=self.contexts.get("client"),
                           material=ctx.material)

    def add_pair(self, app_port: int, *, upstream_host: str = "127.0.0.1", **limits: Any) -> None:
        """inbound "in" -> app, outbound "out" -> "in" (dialled as ``upstream_host``) expecting the backend."""
        self.add("in", Direction.INBOUND, app_port, **limits)
        matcher = compile_matcher([BACKEND])
        self.add("out", Direction.OUTBOUND, self.port("in"), session_key="in", upstream_host=upstream_host,
                 authorize=lambda peer: check_expected_peer(peer, matcher, "out"), **limits)

    def start(self) -> None:
        plane = DataPlane(engine=self.engine, listeners=list(self.plans.values()), emit=self.records.append,
                          relay_on_thread=self.relay_on_thread)
        self.data_plane = plane
        ready = threading.Event()
        if self.runtime == "trio":
            import trio

            from proxy.runtime.trio_driver import serve_data_plane

            async def main() -> None:
                stop = trio.Event()
                token = trio.lowlevel.current_trio_token()
                self._stop = lambda: token.run_sync_soon(stop.set)
                ready.set()
                await serve_data_plane(plane, stop, grace=0.5)

            self._thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        else:
            import uvloop

            from proxy.runtime.uvloop_driver import serve_data_plane as serve_uv

            async def amain() -> None:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                self._stop = lambda: loop.call_soon_threadsafe(stop.set)
                ready.set()
                await serve_uv(plane, stop, grace=0.5)

            self._thread = threading.Thread(target=uvloop.run, args=(amain(),), daemon=True)
        self._thread.start()
        assert ready.wait(5)

    def stop(self) -> None:
        """Stop the data plane and wait for it (idempotent)."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "data plane did not stop"

    def wait_record(self, predicate: Callable[[ConnectionRecord], bool], timeout: float = 10.0) -> ConnectionRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in list(self.records):
                if predicate(record):
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no matching record in {timeout:g}s: {self.records}")


