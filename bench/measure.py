"""One round of measurements against one running variant.

Every load phase is bracketed by /proc samples of each proxy, so each figure
comes with the CPU each proxy spent on it. A phase that fails records its
error and the round goes on: one broken number must not hide the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bench.load.bulk import run_bulk
from bench.load.idle import hold_idle
from bench.load.stime import run_stime
from bench.load.wrk import run_wrk
from bench.peers.base import Endpoints
from bench.pki import BenchPki

T = TypeVar("T")
GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Settings:
    """How long and how big each phase is (quick vs full)."""

    seconds: float
    ka_connections: int
    cc_connections: int
    stime_parallel: int
    bulk_bytes: int
    bulk_timeout: float
    idle_connections: int


Figures = dict[str, float]


def with_cpu(ep: Endpoints, fn: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """Run fn; return its result and each side's CPU seconds spent meanwhile."""
    before = {s.label: s.sample().cpu_s for s in ep.sides}
    result = fn()
    after = {s.label: s.sample().cpu_s for s in ep.sides}
    return result, {label: after[label] - before[label] for label in before}


def per_unit(cpu: dict[str, float], units: float, prefix: str, scale: float) -> Figures:
    """CPU per unit of work for each side and for the pair (their sum): the
    pair figure is what a noisy machine cannot distort, so goals use it too."""
    if not units or not cpu:
        return {}
    out = {f"{prefix}_{side}": s / units * scale for side, s in cpu.items()}
    if len(cpu) == 2:
        out[f"{prefix}_pair"] = sum(cpu.values()) / units * scale
    return out


def keepalive(ep: Endpoints, st: Settings, pki: BenchPki) -> Figures:
    r, cpu = with_cpu(ep, lambda: run_wrk(ep.http_url, seconds=st.seconds, connections=st.ka_connections,
                                          close=False))
    out = {"ka_rps": r.rps, "ka_p50_ms": r.p50_ms, "ka_p99_ms": r.p99_ms, "ka_errors": float(r.errors)}
    out |= per_unit(cpu, r.requests, "cpu_req_us", 1e6)
    return out


def newconn(ep: Endpoints, st: Settings, pki: BenchPki) -> Figures:
    r, cpu = with_cpu(ep, lambda: run_wrk(ep.http_url, seconds=st.seconds, connections=st.cc_connections,
                                          close=True))
    out = {"cc_rps": r.rps, "cc_p99_ms": r.p99_ms, "cc_errors": float(r.errors)}
    out |= per_unit(cpu, r.requests, "cpu_conn_us", 1e6)
    return out


def handshakes(ep: Endpoints, st: Settings, pki: BenchPki) -> Figures:
    if ep.tls is None:
        return {}
    host, port = ep.tls
    r, cpu = with_cpu(ep, lambda: run_stime(host, port, pki, seconds=st.seconds, parallel=st.stime_parallel))
    out = {"hs_rate": r.per_s}
    if "server" in cpu and r.handshakes:
        out["cpu_hs_us_server"] = cpu["server"] / r.handshakes * 1e6
    return out


def bulk(ep: Endpoints, st: Settings, pki: BenchPki) -> Figures:
    if ep.bulk is None:
        return {}
    host, port = ep.bulk
    r, cpu = with_cpu(ep, lambda: run_bulk(host, port, st.bulk_bytes, timeout=st.bulk_timeout))
    out = {"bulk_mbs": r.mb_per_s}
    out |= per_unit(cpu, r.nbytes / GIB, "cpu_gib_s", 1.0)
    return out


def idle_memory(ep: Endpoints, st: Settings, pki: BenchPki) -> Figures:
    """RSS growth per idle connection held through the pair."""
    if not ep.sides:
        return {}
    host, port = _host_port(ep.http_url)
    before = {s.label: s.sample().rss_bytes for s in ep.sides}
    with hold_idle(host, port, st.idle_connections, timeout=max(60.0, st.idle_connections * 0.2)):
        time.sleep(1.0)
        after = {s.label: s.sample().rss_bytes for s in ep.sides}
    per = {label: (after[label] - before[label]) / st.idle_connections / 1024 for label in before}
    out = {f"rss_conn_kib_{label}": v for label, v in per.items()}
    out["rss_conn_kib_pair"] = sum(per.values())
    return out


def warm_connections(ep: Endpoints, count: int = 16) -> None:
    """Open and close a few connections through the pair, so one-time
    allocations (lazy imports, caches, first handshake) are not counted as
    per-connection memory."""
    host, port = _host_port(ep.http_url)
    with hold_idle(host, port, count, timeout=60.0):
        pass


def idle_rss(ep: Endpoints) -> Figures:
    """Resident memory of each proxy at rest (sampled before any load)."""
    return {f"rss_idle_mib_{s.label}": s.sample().rss_bytes / (1 << 20) for s in ep.sides}


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port or 80)


Phase = Callable[[Endpoints, Settings, BenchPki], Figures]
# "memory" is run on a freshly started pair by the orchestrator (see orchestrate.memory_phase).
PHASES: dict[str, Phase] = {"keepalive": keepalive, "newconn": newconn, "handshakes": handshakes,
                            "bulk": bulk, "memory": idle_memory}
