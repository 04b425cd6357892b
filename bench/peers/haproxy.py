"""The haproxy pair: the reference every goal is a ratio to.

One process, one thread each (`nbthread 1`, foreground `-db`), TCP mode, TLS
1.3 only. The client side verifies the server's chain against the CA and
presents the client SVID; the server side requires and verifies a client
certificate. haproxy's own defaults otherwise (it caches TLS sessions towards
its servers, so the client side may resume).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.peers.base import Endpoints, PairPorts, StartContext, need_binary, pair_endpoints
from bench.procs import wait_port

_GLOBAL = """global
    nbthread 1
    maxconn 8000
    ssl-server-verify required
defaults
    mode tcp
    timeout connect 5s
    timeout client 600s
    timeout server 600s
"""


def client_config(ports: PairPorts, ctx: StartContext) -> str:
    """Plain in, mTLS out."""
    tls = (f"ssl verify required ca-file {ctx.pki.ca} crt {ctx.pki.client.combined} "
           "ssl-min-ver TLSv1.3")
    out = [_GLOBAL]
    for route, listen, upstream in (("http", ports.client_http, ports.server_http),
                                    ("bulk", ports.client_bulk, ports.server_bulk)):
        out.append(f"frontend {route}\n    bind 127.0.0.1:{listen}\n    default_backend {route}\n"
                   f"backend {route}\n    server s 127.0.0.1:{upstream} {tls}\n")
    return "".join(out)


def server_config(ports: PairPorts, ctx: StartContext) -> str:
    """mTLS in (client certificate required), plain out."""
    tls = f"ssl crt {ctx.pki.server.combined} ca-file {ctx.pki.ca} verify required ssl-min-ver TLSv1.3"
    out = [_GLOBAL]
    for route, listen, upstream in (("http", ports.server_http, ctx.backends.http_port),
                                    ("bulk", ports.server_bulk, ctx.backends.sink_port)):
        out.append(f"frontend {route}\n    bind 127.0.0.1:{listen} {tls}\n    default_backend {route}\n"
                   f"backend {route}\n    server b 127.0.0.1:{upstream}\n")
    return "".join(out)


@dataclass
class Haproxy:
    """haproxy 2.x pair."""

    name: str = "haproxy"

    def missing(self) -> str | None:
        return need_binary("haproxy", "haproxy")

    def start(self, ctx: StartContext) -> Endpoints:
        ports = PairPorts()
        sids = []
        for side, text in (("server", server_config(ports, ctx)), ("client", client_config(ports, ctx))):
            cfg = ctx.workdir / f"haproxy-{side}.cfg"
            cfg.write_text(text)
            proc = ctx.procs.start(f"haproxy-{side}", ["haproxy", "-db", "-f", str(cfg)])
            wait_port(ports.server_http if side == "server" else ports.client_http, proc)
            sids.append(proc.pid)
        return pair_endpoints(ports, client_sid=sids[1], server_sid=sids[0])
