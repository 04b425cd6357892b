#!/usr/bin/env python3
"""spiffe-sidecar side by side with haproxy, nginx and stunnel: one command.

    python bench/run.py --quick            # under 3 minutes
    python bench/run.py                    # full: 5 rounds, 10 s phases, 1 GiB, 1000 idle conns
    python bench/run.py --variants direct,haproxy,sidecar-trio
    python bench/run.py --target-url http://127.0.0.1:9001/ --pair-pids 1234,5678   # your own pair

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import Settings  # noqa: E402
from bench.orchestrate import Plan, execute  # noqa: E402
from bench.output import build, write  # noqa: E402
from bench.peers.target import Target, host_port  # noqa: E402
from bench.pki import BenchPki, SvidFiles  # noqa: E402
from bench.variants import all_variants, select  # noqa: E402

MIB = 1 << 20


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 rounds, 1 s phases, 256 MiB, 200 idle conns")
    p.add_argument("--rounds", type=int, help="rounds over all variants (quick 2, full 5)")
    p.add_argument("--seconds", type=float, help="length of each load phase (quick 1, full 10)")
    p.add_argument("--bulk-mib", type=int, help="bulk transfer size (quick 256, full 1024)")
    p.add_argument("--idle-conns", type=int, help="idle connections held for RSS (quick 200, full 1000)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections on keep-alive (32)")
    p.add_argument("--variants", help="comma list; `--list` shows them (default: all)")
    p.add_argument("--list", action="store_true", help="list the variants and whether they can run")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and logs under /tmp")
    g = p.add_argument_group("an existing deployment (variant 'target')")
    g.add_argument("--target-url", help="the client proxy's plain listener, routed to a small HTTP backend")
    g.add_argument("--target-tls", type=host_port, help="HOST:PORT of the server proxy's mTLS listener")
    g.add_argument("--target-bulk", type=host_port, help="HOST:PORT routed through the pair to --sink-port")
    g.add_argument("--sink-port", type=int, help="port of this harness's byte sink (for --target-bulk)")
    g.add_argument("--pair-pids", help="CLIENT_PID,SERVER_PID for CPU and RSS accounting")
    g.add_argument("--tls-cert", type=Path, help="client SVID (PEM) for --target-tls")
    g.add_argument("--tls-key", type=Path, help="its key")
    g.add_argument("--tls-ca", type=Path, help="the bundle that verifies the server")
    return p.parse_args(argv)


def settings_of(a: argparse.Namespace) -> tuple[Settings, int]:
    quick = a.quick
    seconds = a.seconds or (1.0 if quick else 10.0)
    bulk_mib = a.bulk_mib or (256 if quick else 1024)
    return Settings(seconds=seconds, ka_connections=a.connections, cc_connections=16, stime_parallel=2,
                    bulk_bytes=bulk_mib * MIB, bulk_timeout=30.0 if quick else 120.0,
                    idle_connections=a.idle_conns or (200 if quick else 1000)), a.rounds or (2 if quick else 5)


def target_of(a: argparse.Namespace) -> tuple[Target, BenchPki | None]:
    pids = tuple(int(x) for x in a.pair_pids.split(",")) if a.pair_pids else ()
    pki = None
    if a.target_tls:
        if not (a.tls_cert and a.tls_key and a.tls_ca):
            raise SystemExit("--target-tls needs --tls-cert, --tls-key and --tls-ca")
        pki = BenchPki(ca=a.tls_ca, client=SvidFiles(a.tls_cert, a.tls_key, a.tls_cert), server=SvidFiles(
            a.tls_cert, a.tls_key, a.tls_cert))
    return Target(url=a.target_url, tls=a.target_tls, bulk=a.target_bulk, pids=pids), pki


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """A SIGTERM unwinds like Ctrl-C, so every started process group is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    a = parse_args(argv)
    if a.list:
        for v in all_variants():
            print(f"{v.name:16} {v.missing() or 'ready'}")
        return 0
    settings, rounds = settings_of(a)
    names = a.variants.split(",") if a.variants else None
    variants, pki = select(names), None
    if a.target_url:
        target, pki = target_of(a)
        variants = (select(names) if names else []) + [target]
    plan = Plan(variants=variants, settings=settings, rounds=rounds, memory_every_round=not a.quick,
                pki=pki, sink_port=a.sink_port)
    result = execute(plan, keep_workdir=a.keep_workdir)
    doc = build(result, settings, "python bench/run.py " + shlex.join(argv), rounds)
    for path in write(doc, a.out):
        print(f"wrote {path}")
    print((a.out / "results.md").read_text())
    return 0 if result.rounds else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
