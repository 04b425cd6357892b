"""A whole run: start the backends and every variant, alternate rounds of
measurements over them, and stop everything whatever happens.

Variants are all started up front and measured in a rotating order each round,
so slow drift of the machine (thermal, page cache, a neighbour) spreads over
every variant instead of biasing whichever ran last.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import measure
from bench.backend import start_backends
from bench.load import stime, wrk
from bench.measure import Figures, Settings
from bench.peers.base import Endpoints, StartContext, Variant
from bench.pki import BenchPki, write_pki
from bench.procs import ProcessSet, StartError
from bench.progress import Progress


@dataclass
class RunResult:
    """Raw per-round figures and what went wrong, per variant."""

    rounds: dict[str, list[Figures]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run: variants, settings, rounds, which rounds hold idle conns."""

    variants: list[Variant]
    settings: Settings
    rounds: int
    memory_every_round: bool
    pki: BenchPki | None = None  # a user's client SVID for --target-tls; else the bench PKI
    sink_port: int | None = None


def raise_fd_limit() -> None:
    """Idle-connection phases hold thousands of sockets across the processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass(frozen=True, slots=True)
class Running:
    """A started variant and where it listens."""

    variant: Variant
    ep: Endpoints


def memory_phase(r: Running, ctx: StartContext, st: Settings, pki: BenchPki) -> Figures:
    """Idle RSS and RSS per held connection, on a pair started just for this.

    A pair that has been through the load phases keeps freed memory in its
    allocator pools, so new connections reuse it and RSS barely moves (the
    per-connection figure then depends on which load ran before). A fresh
    pair, warmed by a few connections, measures what connections cost.
    A user's pair (--pair-pids) cannot be restarted and is measured as is.
    """
    if not r.ep.sides or any(s.sid is None for s in r.ep.sides):
        return measure.idle_rss(r.ep) | measure.idle_memory(r.ep, st, pki)
    ep = r.variant.start(ctx)
    try:
        time.sleep(0.5)
        out = measure.idle_rss(ep)
        measure.warm_connections(ep)
        time.sleep(0.3)
        return out | measure.idle_memory(ep, st, pki)
    finally:
        ctx.procs.stop_sessions([s.sid for s in ep.sides if s.sid is not None])


def start_variants(plan: Plan, ctx: StartContext, result: RunResult, bar: Progress) -> dict[str, Running]:
    """Start every available variant; note (and skip) the absent and the broken."""
    running: dict[str, Running] = {}
    for v in plan.variants:
        why = v.missing()
        if why is None:
            try:
                bar.describe(f"starting {v.name}")
                running[v.name] = Running(v, v.start(ctx))
                continue
            except (StartError, OSError) as exc:
                why = f"failed to start: {exc}"
        result.skipped[v.name] = why
        bar.write(f"skipping {v.name}: {why}")
    return running


def warm_up(running: dict[str, Running], bar: Progress) -> None:
    """One short keep-alive burst per variant, so no first round pays for
    lazy imports, page faults and first handshakes."""
    for name, r in running.items():
        bar.describe(f"warm-up {name}")
        try:
            wrk.run_wrk(r.ep.http_url, seconds=1, connections=8, close=False)
        except Exception as exc:  # noqa: BLE001 - a warm-up failure shows up again in round 1
            bar.write(f"warm-up of {name} failed: {exc}")


def phase_names(plan: Plan, rnd: int) -> list[str]:
    with_memory = plan.memory_every_round or rnd == plan.rounds - 1
    return [p for p in measure.PHASES if p != "memory" or with_memory]


def one_round(plan: Plan, rnd: int, running: dict[str, Running], ctx: StartContext, pki: BenchPki,
              result: RunResult, bar: Progress) -> None:
    """Measure every running variant once, starting at a rotating offset."""
    names = list(running)
    k = rnd % len(names)
    for name in names[k:] + names[:k]:
        figures: Figures = {}
        for phase in phase_names(plan, rnd):
            bar.describe(f"round {rnd + 1}/{plan.rounds} {name} {phase}")
            start = time.monotonic()
            try:
                if phase == "memory":
                    figures |= memory_phase(running[name], ctx, plan.settings, pki)
                else:
                    figures |= measure.PHASES[phase](running[name].ep, plan.settings, pki)
            except Exception as exc:  # noqa: BLE001 - record it and keep the other figures
                result.errors.setdefault(name, []).append(f"round {rnd + 1} {phase}: {exc}")
                bar.write(f"{name} {phase} failed: {exc}")
            figures[f"wall_s_{phase}"] = time.monotonic() - start
            time.sleep(0.2)
            bar.step()
        result.rounds.setdefault(name, []).append(figures)


def total_steps(plan: Plan, nvariants: int) -> int:
    return sum(len(phase_names(plan, r)) for r in range(plan.rounds)) * nvariants


def execute(plan: Plan, keep_workdir: bool = False) -> RunResult:
    """Run the plan end to end; every process started is stopped on return."""
    for why in filter(None, (wrk.missing(), stime.missing())):
        raise SystemExit(why)
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="spiffe-bench-", dir="/tmp"))
    result = RunResult()
    bar = Progress(total=total_steps(plan, len(plan.variants)))
    try:
        with ProcessSet(workdir) as procs:
            pki = write_pki(workdir / "pki")
            ctx = StartContext(procs, pki, start_backends(procs, workdir, plan.sink_port), workdir)
            running = start_variants(plan, ctx, result, bar)
            bar.total = total_steps(plan, len(running))
            warm_up(running, bar)
            for rnd in range(plan.rounds if running else 0):
                one_round(plan, rnd, running, ctx, plan.pki or pki, result, bar)
    finally:
        bar.close()
        if keep_workdir:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result
