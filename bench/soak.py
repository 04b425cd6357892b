#!/usr/bin/env python3
"""Soak: a sidecar pair under load while everything that can happen to it happens at once.

    python bench/soak.py --minutes 10
    python bench/soak.py --minutes 1 --runtime uvloop --json soak.json

An embedded agent (its CA persisted in the run's state directory, 20 s
X.509-SVIDs and a 2-minute CA, so SVID rotation and CA rotation both happen),
a backend sidecar (inbound, policy file) in front of an echo app and a
frontend sidecar (outbound, expect) in front of the load. Meanwhile, on a
schedule: the agent is restarted (SIGTERM, then SIGKILL every other time),
the policy file is replaced, the backend's inbound listener is flooded with
connections that never start TLS (from 127.0.0.2), and a peer of the trust
domain whom the policy denies presents a chain padded with junk certificates
(from 127.0.0.3): attackers come from addresses of their own, as other hosts
would, so per-source limits can keep them apart from the frontend sidecar.

Reported: requests, failures (with the first errors), bytes verified (each
request's echo compared by sha256), rotations and reloads seen, how long each
sidecar took to get an SVID from each restarted agent, and RSS and fds of each
process at start and end (the agent's end figures are its last incarnation's).
Reconnect times count from the moment the restarted agent listens. Loopback only; every loop ends at the deadline and
the load also at --max-requests. Exit 1 when a request failed or an attacker
got through.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import Proc, ProcessSet, free_port, wait_port  # noqa: E402
from bench.soak_parts import (  # noqa: E402
    ATTACKER,
    EchoApp,
    LoadStats,
    admin_json,
    by_label,
    handshake_flood,
    metric,
    padded_chain,
    padded_chain_attack,
    run_load,
    usage,
)

APP = "spiffe://example.org/app"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Schedule:
    """Seconds between chaos events (each runs in the chaos thread, one after another)."""

    agent_restart: float = 25.0
    policy_reload: float = 5.0
    flood: float = 15.0
    padded: float = 10.0


@dataclass
class Chaos:
    """What the chaos thread did and saw."""

    agent_restarts: int = 0
    agent_down_seconds: list[float] = field(default_factory=list)
    reconnect_seconds: dict[str, list[float]] = field(default_factory=lambda: {"backend": [], "frontend": []})
    policy_writes: int = 0
    flood_sockets: int = 0
    padded_attempts: int = 0
    attackers_through: int = 0
    errors: list[str] = field(default_factory=list)


class Pair:
    """The agent and the two sidecars of one soak, as processes in ``procs``."""

    def __init__(self, procs: ProcessSet, workdir: Path, runtime: str, app_port: int) -> None:
        self.procs, self.workdir, self.runtime = procs, workdir, runtime
        self.socket = workdir / "agent.sock"
        self.state_dir = workdir / "state"
        self.ports = {name: free_port() for name in ("backend", "frontend", "backend_admin", "frontend_admin")}
        self.policy = workdir / "policy.yaml"
        self.agent_config = workdir / "agent.yaml"
        self.agent_config.write_text(json.dumps({
            "socket_path": str(self.socket), "state_dir": str(self.state_dir), "x509_svid_ttl": "20s",
            "trust_domains": [{"name": "example.org", "ca_ttl": "2m"}],
            "entries": [{"spiffe_id": APP, "selectors": [f"unix:uid:{os.getuid()}"]}]}))
        self.write_policy(0)
        self._sidecar_config("backend", inbound=[{"name": "api", "listen": f"127.0.0.1:{self.ports['backend']}",
                                                  "forward_to": f"127.0.0.1:{app_port}", "policy": "api"}],
                             policy_file=str(self.policy))
        self._sidecar_config("frontend", outbound=[{"name": "to-api", "listen": f"127.0.0.1:{self.ports['frontend']}",
                                                    "connect_to": f"127.0.0.1:{self.ports['backend']}",
                                                    "expect": APP}])
        self.agent: Proc | None = None
        self.sidecars: dict[str, Proc] = {}

    def _sidecar_config(self, name: str, **listeners: Any) -> None:
        doc = {"identity": {"workload_api": f"unix://{self.socket}"}, "runtime": self.runtime,
               "admin": {"listen": f"127.0.0.1:{self.ports[name + '_admin']}"}, "log": {"access": "off"},
               "drain_timeout": "2s", **listeners}
        (self.workdir / f"{name}.yaml").write_text(json.dumps(doc))

    def write_policy(self, n: int) -> None:
        """Replace the policy by rename (the safe way): the app allowed, the attacker denied, rule names vary."""
        doc = {"policies": {"api": [{"name": f"no-attacker-{n}", "deny": [ATTACKER]},
                                    {"name": f"app-{n}", "allow": [APP]}]}}
        tmp = self.policy.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.policy)

    def start_agent(self) -> None:
        self.agent = self.procs.start("agent", [sys.executable, "-m", "proxy", "agent", "-c", str(self.agent_config)],
                                      env={"PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 20
        while not self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def start_sidecars(self) -> None:
        for name in ("backend", "frontend"):
            self.sidecars[name] = self.procs.start(
                name, [sys.executable, "-m", "proxy", "run", "-c", str(self.workdir / f"{name}.yaml")],
                env={"PYTHONPATH": str(REPO)})
        for name in ("backend", "frontend"):
            wait_port(self.ports[name], self.sidecars[name], timeout=30)
            self.wait_identity(name, -1, 30)

    def wait_identity(self, name: str, after_generation: int, timeout: float) -> float | None:
        """Seconds until ``name`` holds an SVID newer than ``after_generation`` (None: not within ``timeout``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                ident = admin_json(self.ports[name + "_admin"], "/identity")
                if ident.get("ready") and int(str(ident.get("generation") or 0)) > after_generation:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        return None

    def generation(self, name: str) -> int:
        return int(str(admin_json(self.ports[name + "_admin"], "/identity").get("generation") or 0))

    def restart_agent(self, chaos: Chaos) -> None:
        """Stop the agent (SIGKILL every other time), start it again, time each sidecar's new SVID."""
        assert self.agent is not None
        before = {name: self.generation(name) for name in self.sidecars}
        stopped = time.monotonic()
        if chaos.agent_restarts % 2:
            os.kill(self.agent.pid, 9)
        self.procs.stop(self.agent)
        self.socket.unlink(missing_ok=True)
        self.start_agent()
        chaos.agent_down_seconds.append(round(time.monotonic() - stopped, 2))
        chaos.agent_restarts += 1
        for name in self.sidecars:
            took = self.wait_identity(name, before[name], 30)
            if took is None:
                chaos.errors.append(f"{name}: no SVID from the restarted agent within 30 s")
            else:
                chaos.reconnect_seconds[name].append(round(took, 2))

    def counters(self) -> dict[str, dict[str, Any]]:
        """Rotations, reconnects, reloads and refusals as each sidecar counted them."""
        out: dict[str, dict[str, Any]] = {name: {
            "svid_rotations": metric(self.ports[name + "_admin"], "spiffe_sidecar_svid_rotations_total"),
            "workload_api_reconnects": metric(self.ports[name + "_admin"],
                                              "spiffe_sidecar_workload_api_reconnects_total")}
            for name in ("backend", "frontend")}
        admin = self.ports["backend_admin"]
        out["backend"]["policy_reloads_ok"] = metric(admin, "spiffe_sidecar_policy_reloads_total", 'result="ok"')
        out["backend"]["denied"] = metric(admin, "spiffe_sidecar_authz_decisions_total", 'decision="deny"')
        out["backend"]["handshake_failures"] = by_label(admin, "spiffe_sidecar_handshakes_total", "reason",
                                                        'result="failure"')
        return out

    def usage(self) -> dict[str, tuple[int, int]]:
        procs = {**self.sidecars, "agent": self.agent}
        return {name: usage(p.pid) for name, p in procs.items() if p is not None}


def chaos_loop(pair: Pair, schedule: Schedule, deadline: float, chaos: Chaos) -> None:
    """Run each kind of event on its own period until the deadline (one at a time, in this thread)."""
    start = time.monotonic()
    due = {"agent": start + schedule.agent_restart, "policy": start + schedule.policy_reload,
           "flood": start + schedule.flood / 2, "padded": start + schedule.padded / 3}
    period = {"agent": schedule.agent_restart, "policy": schedule.policy_reload, "flood": schedule.flood,
              "padded": schedule.padded}
    while (now := time.monotonic()) < deadline:
        kind = min(due, key=lambda k: due[k])
        if due[kind] > now:
            time.sleep(min(0.2, due[kind] - now))
            continue
        due[kind] = now + period[kind]
        try:
            if kind == "agent":
                pair.restart_agent(chaos)
            elif kind == "policy":
                chaos.policy_writes += 1
                pair.write_policy(chaos.policy_writes)
            elif kind == "flood":
                chaos.flood_sockets += handshake_flood(pair.ports["backend"], 300, hold=2.0)
            else:
                chain, key = padded_chain(pair.state_dir, pair.workdir, junk=40)
                chaos.attackers_through += padded_chain_attack(pair.ports["backend"], chain, key, count=50)
                chaos.padded_attempts += 50
        except Exception as exc:  # a chaos step failing is a finding to report, not a reason to stop the soak
            chaos.errors.append(f"{kind}: {type(exc).__name__}: {exc}")


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run the load and the chaos until the deadline, stop, and report."""
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    app = EchoApp()
    stats, chaos = LoadStats(), Chaos()
    try:
        with ProcessSet(workdir) as procs:
            pair = Pair(procs, workdir, args.runtime, app.port)
            pair.start_agent()
            pair.start_sidecars()
            time.sleep(1.0)
            at_start = pair.usage()
            started = time.monotonic()
            deadline = started + args.minutes * 60
            workers = [threading.Thread(target=run_load, daemon=True, args=(
                pair.ports["frontend"], args.payload, deadline, stats, args.max_requests)) for _ in range(args.workers)]
            for w in workers:
                w.start()
            chaos_loop(pair, Schedule(), deadline, chaos)
            for w in workers:
                w.join(30)
            time.sleep(2.0)  # let the flood's and the attack's connections close before the last sample
            at_end = pair.usage()
            counters = pair.counters()
            elapsed = time.monotonic() - started
    finally:
        app.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return {"minutes": args.minutes, "runtime": args.runtime, "seconds": round(elapsed, 1),
            "requests": stats.requests, "failures": stats.failures, "first_errors": stats.first_errors,
            "bytes_verified": stats.bytes_verified, "agent_restarts": chaos.agent_restarts,
            "agent_down_seconds": chaos.agent_down_seconds,
            "reconnect_seconds": chaos.reconnect_seconds, "policy_writes": chaos.policy_writes,
            "flood_sockets": chaos.flood_sockets, "padded_chain_attempts": chaos.padded_attempts,
            "attackers_through": chaos.attackers_through, "chaos_errors": chaos.errors, "counters": counters,
            "usage_start": {k: {"rss_kib": v[0], "fds": v[1]} for k, v in at_start.items()},
            "usage_end": {k: {"rss_kib": v[0], "fds": v[1]} for k, v in at_end.items()},
            "workdir": str(workdir) if args.keep else None}


def render(report: dict[str, Any]) -> str:
    lines = [f"soak: {report['seconds']}s, runtime {report['runtime']}",
             f"  requests {report['requests']}, failures {report['failures']}, "
             f"bytes verified {report['bytes_verified'] / (1 << 20):.1f} MiB",
             f"  agent restarts {report['agent_restarts']}, down {report['agent_down_seconds']} s; then seconds to"
             f" each sidecar's new SVID: {report['reconnect_seconds']}",
             f"  policy writes {report['policy_writes']}, flood sockets {report['flood_sockets']}, padded-chain "
             f"attempts {report['padded_chain_attempts']} (through: {report['attackers_through']})",
             f"  counters {report['counters']}"]
    for name in report["usage_start"]:
        s, e = report["usage_start"][name], report["usage_end"].get(name, {})
        lines.append(f"  {name:9s} RSS {s['rss_kib'] / 1024:.1f} -> {e.get('rss_kib', 0) / 1024:.1f} MiB, "
                     f"fds {s['fds']} -> {e.get('fds', '?')}")
    for err in report["first_errors"] + report["chaos_errors"]:
        lines.append(f"  ! {err}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load and the chaos run")
    parser.add_argument("--runtime", choices=("trio", "uvloop"), default="trio", help="both sidecars' runtime")
    parser.add_argument("--workers", type=int, default=4, help="concurrent request loops")
    parser.add_argument("--payload", type=int, default=16384, help="bytes per request (echoed and compared)")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="stop the load after this many")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = parser.parse_args(argv)
    report = soak(args)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if report["failures"] or report["attackers_through"] or report["chaos_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
