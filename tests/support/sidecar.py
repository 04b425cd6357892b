"""Start a real sidecar process with a config, wait for it to be ready, read its records, stop it.

    from support.sidecar import SidecarHarness, Identity

    ident = Identity.mint(tmp_path, ca, "/backend")
    sc = SidecarHarness(tmp_path, runtime="trio", engine="python", identity=ident,
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}", "forward_to": ..., "policy": "api"}],
                        policy={"api": [{"name": "r", "allow": ["spiffe://example.org/frontend"]}]})
    with sc:                          # start + wait_ready; stop on exit (always)
        ...
        sc.wait_record(lambda r: r["peer_id"] == ...)

The four scenario combinations are ``COMBOS`` (runtime x engine); the engine
is chosen in the subprocess by SPIFFE_SIDECAR_NO_EXTENSIONS=1 (python) or
SPIFFE_SIDECAR_REQUIRE_EXTENSIONS=1 (fastpath: fail rather than fall back).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from proxy.demo.processes import SidecarProcess

from support import pki

RUNTIMES = ("trio", "uvloop")
ENGINES = ("python", "fastpath")
COMBOS = [(r, e) for r in RUNTIMES for e in ENGINES]
ENGINE_ENV = {"python": {"SPIFFE_SIDECAR_NO_EXTENSIONS": "1"},
              "fastpath": {"SPIFFE_SIDECAR_REQUIRE_EXTENSIONS": "1", "SPIFFE_SIDECAR_NO_EXTENSIONS": "0"}}


def fastpath_available() -> bool:
    """True when the compiled engine is built and implements the contract."""
    try:
        from proxy import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return False
    return all(hasattr(_fastpath, n) for n in ("ServerContext", "ClientContext", "Relay"))


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
                 name: str | None = None, python: str | None = None, drain_timeout: str = "1s") -> None:
        SidecarHarness._count += 1
        self.name = name or f"sidecar{SidecarHarness._count}"
        doc: dict[str, Any] = {"identity": identity.yaml() if isinstance(identity, Identity) else identity,
                               "runtime": runtime, "log": {"level": "debug"}, "drain_timeout": drain_timeout}
        if inbound:
            doc["inbound"] = list(inbound)
            policy_path = directory / f"{self.name}.policy.yaml"
            policy_path.write_text(json.dumps({"policies": policy or {}}))
            doc["policy_file"] = str(policy_path)
        if outbound:
            doc["outbound"] = list(outbound)
        if limits:
            doc["limits"] = limits
        self.config = directory / f"{self.name}.yaml"
        self.config.write_text(json.dumps(doc, indent=1))
        self.process = SidecarProcess(self.name, self.config, directory, python=python, env=ENGINE_ENV[engine])

    def __enter__(self) -> SidecarHarness:
        self.process.start()
        try:
            self.process.wait_ready(30.0)
        except BaseException:
            self.process.stop()
            raise
        return self

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

    def wait_record(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The newest record matching ``predicate``; AssertionError with the log on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in reversed(self.records()):
                if predicate(record):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no matching record from {self.name} in {timeout:g}s; records: {self.records()[-5:]}"
                             f"\nlog:\n{self.log()[-3000:]}")

    def rss_kib(self) -> int:
        """The sidecar's resident set size (KiB), from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@contextlib.contextmanager
def running(*sidecars: SidecarHarness) -> Iterator[tuple[SidecarHarness, ...]]:
    """Start several sidecars at once (start-up dominates test time), wait for all, stop all."""
    try:
        for sc in sidecars:
            sc.process.start()
        for sc in sidecars:
            sc.process.wait_ready(30.0)
        yield sidecars
    finally:
        for sc in sidecars:
            sc.process.stop()
