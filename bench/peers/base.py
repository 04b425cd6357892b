"""What every variant provides to the measurements, and what it is given.

A variant is a PAIR of proxies: load -> client proxy (plain in, mTLS out) ->
server proxy (mTLS in, plain out) -> backend. Each pair carries two routes:
`http` ends at the 64-byte HTTP backend, `bulk` ends at the byte sink. The
server proxy's mTLS `http` listener is also exposed directly so handshakes can
be timed against it alone (openssl s_time).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.pki import BenchPki
from bench.procs import ProcessSet, free_port
from bench.procstat import Side


@dataclass(frozen=True, slots=True)
class Backends:
    """The fixed ends every pair forwards to."""

    http_port: int
    sink_port: int


@dataclass(frozen=True, slots=True)
class PairPorts:
    """Four fresh ports: client proxy's plain listeners and server proxy's
    mTLS listeners, for the http and bulk routes."""

    client_http: int = field(default_factory=free_port)
    client_bulk: int = field(default_factory=free_port)
    server_http: int = field(default_factory=free_port)
    server_bulk: int = field(default_factory=free_port)


@dataclass(frozen=True, slots=True)
class StartContext:
    """Everything a variant needs to start its pair."""

    procs: ProcessSet
    pki: BenchPki
    backends: Backends
    workdir: Path


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the measurements point, once a variant runs.

    Attributes:
        http_url: the keep-alive/new-connection load target.
        bulk: (host, port) where the bulk sender connects, or None (not measured).
        tls: (host, port) of the server proxy's mTLS listener, or None (direct).
        sides: the client and server proxy for CPU/RSS accounting (empty: direct).
    """

    http_url: str
    bulk: tuple[str, int] | None
    tls: tuple[str, int] | None
    sides: tuple[Side, ...]


class Variant(Protocol):
    """One thing to compare. `missing()` says why it cannot run here (with the
    install command), or returns None; `start` brings the pair up and waits
    until it accepts."""

    name: str

    def missing(self) -> str | None: ...

    def start(self, ctx: StartContext) -> Endpoints: ...


def need_binary(binary: str, package: str) -> str | None:
    """The skip message for an absent peer, or None when it is installed."""
    if shutil.which(binary) is None:
        return f"{binary} not installed: apt-get install {package}"
    return None


def pair_endpoints(ports: PairPorts, client_sid: int, server_sid: int) -> Endpoints:
    """Endpoints of a pair we started, with both processes as accounting sides."""
    return Endpoints(http_url=f"http://127.0.0.1:{ports.client_http}/",
                     bulk=("127.0.0.1", ports.client_bulk), tls=("127.0.0.1", ports.server_http),
                     sides=(Side("client", sid=client_sid), Side("server", sid=server_sid)))
