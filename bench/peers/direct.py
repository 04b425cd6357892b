"""The baseline: load straight at the backend and bytes straight into the sink.

Every ratio "to direct" divides by these figures: what the machine does with
no proxy at all, so a pair's cost is visible as what it takes away.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.peers.base import Endpoints, StartContext


@dataclass
class Direct:
    """No proxies; nothing to start."""

    name: str = "direct"

    def missing(self) -> str | None:
        return None

    def start(self, ctx: StartContext) -> Endpoints:
        b = ctx.backends
        return Endpoints(http_url=f"http://127.0.0.1:{b.http_port}/", bulk=("127.0.0.1", b.sink_port),
                         tls=None, sides=())
