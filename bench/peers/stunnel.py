"""The stunnel pair (TLS 1.3 only; stunnel has no worker setting: it is one
process with a thread per connection, which is what its RSS figures show).

TCP_NODELAY is set on both sockets as haproxy and nginx do by default, so a
keep-alive round trip is not held back by Nagle's algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.peers.base import Endpoints, PairPorts, StartContext, need_binary, pair_endpoints
from bench.procs import wait_port

_GLOBAL = "foreground = yes\npid =\ndebug = 3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"


def client_config(ports: PairPorts, ctx: StartContext) -> str:
    """Plain in, mTLS out, server chain verified against the CA."""
    p = ctx.pki
    out = [_GLOBAL]
    for route, listen, up in (("http", ports.client_http, ports.server_http),
                              ("bulk", ports.client_bulk, ports.server_bulk)):
        out.append(f"[{route}]\nclient = yes\naccept = 127.0.0.1:{listen}\nconnect = 127.0.0.1:{up}\n"
                   f"cert = {p.client.cert}\nkey = {p.client.key}\nCAfile = {p.ca}\nverifyChain = yes\n"
                   "sslVersionMin = TLSv1.3\n")
    return "".join(out)


def server_config(ports: PairPorts, ctx: StartContext) -> str:
    """mTLS in (client certificate required and verified), plain out."""
    p = ctx.pki
    out = [_GLOBAL]
    for route, listen, up in (("http", ports.server_http, ctx.backends.http_port),
                              ("bulk", ports.server_bulk, ctx.backends.sink_port)):
        out.append(f"[{route}]\naccept = 127.0.0.1:{listen}\nconnect = 127.0.0.1:{up}\n"
                   f"cert = {p.server.cert}\nkey = {p.server.key}\nCAfile = {p.ca}\nverifyChain = yes\n"
                   "requireCert = yes\nsslVersionMin = TLSv1.3\n")
    return "".join(out)


def _binary() -> str:
    return "stunnel4" if need_binary("stunnel4", "stunnel4") is None else "stunnel"


@dataclass
class Stunnel:
    """stunnel 5.x pair."""

    name: str = "stunnel"

    def missing(self) -> str | None:
        if need_binary("stunnel4", "stunnel4") is None or need_binary("stunnel", "stunnel4") is None:
            return None
        return "stunnel not installed: apt-get install stunnel4"

    def start(self, ctx: StartContext) -> Endpoints:
        ports = PairPorts()
        sids = []
        for side, text in (("server", server_config(ports, ctx)), ("client", client_config(ports, ctx))):
            cfg = ctx.workdir / f"stunnel-{side}.conf"
            cfg.write_text(text)
            proc = ctx.procs.start(f"stunnel-{side}", [_binary(), str(cfg)])
            wait_port(ports.server_http if side == "server" else ports.client_http, proc)
            sids.append(proc.pid)
        return pair_endpoints(ports, client_sid=sids[1], server_sid=sids[0])
