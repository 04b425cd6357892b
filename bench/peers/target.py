"""An existing deployment, for users load-testing their own pair.

Nothing is started: the load goes to `--target-url` (the client proxy's plain
listener, routed to any small HTTP backend), handshakes to `--target-tls`
(the server proxy's mTLS listener, with the client SVID given by
--tls-cert/--tls-key/--tls-ca), bulk bytes to `--target-bulk` (a route whose
server side forwards to this harness's sink on `--sink-port`). CPU and RSS are
read from `--pair-pids CLIENT,SERVER`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.peers.base import Endpoints, StartContext
from bench.procstat import Side


def host_port(text: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port), for the flags."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


@dataclass
class Target:
    """A pair someone else started."""

    url: str
    tls: tuple[str, int] | None = None
    bulk: tuple[str, int] | None = None
    pids: tuple[int, ...] = ()
    name: str = "target"

    def missing(self) -> str | None:
        return None

    def start(self, ctx: StartContext) -> Endpoints:
        sides = tuple(Side(label, pids=(pid,)) for label, pid in zip(("client", "server"), self.pids))
        return Endpoints(http_url=self.url, bulk=self.bulk, tls=self.tls, sides=sides)
