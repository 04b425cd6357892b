"""The nginx stream-module pair (TCP proxying, TLS 1.3 only, one worker).

The client side verifies the upstream chain against the CA; nginx also checks
the upstream name, which with a URI-SAN-only SVID falls back to the subject
CN, so `proxy_ssl_name server` (the bench SVID's CN) is set; SPIFFE identity is
not checked (nginx cannot). Session reuse towards upstream stays at nginx's
default (on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.nginx_conf import STREAM_MODULE, main_block, start_nginx
from bench.peers.base import Endpoints, PairPorts, StartContext, need_binary, pair_endpoints
from bench.procs import wait_port


def client_config(ports: PairPorts, ctx: StartContext, prefix: Path) -> str:
    """Plain in, mTLS out."""
    p = ctx.pki
    tls = (f"proxy_ssl on; proxy_ssl_certificate {p.client.cert}; proxy_ssl_certificate_key {p.client.key}; "
           f"proxy_ssl_trusted_certificate {p.ca}; proxy_ssl_verify on; proxy_ssl_name server; "
           "proxy_ssl_protocols TLSv1.3; proxy_timeout 600s;")
    servers = "".join(f"  server {{ listen 127.0.0.1:{listen} backlog=4096; proxy_pass 127.0.0.1:{up}; {tls} }}\n"
                      for listen, up in ((ports.client_http, ports.server_http),
                                         (ports.client_bulk, ports.server_bulk)))
    return main_block(prefix, stream=True) + "stream {\n" + servers + "}\n"


def server_config(ports: PairPorts, ctx: StartContext, prefix: Path) -> str:
    """mTLS in (client certificate required), plain out."""
    p = ctx.pki
    tls = (f"ssl_certificate {p.server.cert}; ssl_certificate_key {p.server.key}; "
           f"ssl_client_certificate {p.ca}; ssl_verify_client on; ssl_protocols TLSv1.3; proxy_timeout 600s;")
    servers = "".join(f"  server {{ listen 127.0.0.1:{listen} ssl backlog=4096; proxy_pass 127.0.0.1:{up}; {tls} }}\n"
                      for listen, up in ((ports.server_http, ctx.backends.http_port),
                                         (ports.server_bulk, ctx.backends.sink_port)))
    return main_block(prefix, stream=True) + "stream {\n" + servers + "}\n"


@dataclass
class NginxStream:
    """nginx (stream module) pair."""

    name: str = "nginx"

    def missing(self) -> str | None:
        absent = need_binary("nginx", "nginx")
        if absent is None and not STREAM_MODULE.exists():
            return "nginx stream module not installed: apt-get install libnginx-mod-stream"
        return absent

    def start(self, ctx: StartContext) -> Endpoints:
        ports = PairPorts()
        sids = []
        for side, build in (("server", server_config), ("client", client_config)):
            name = f"nginx-{side}"
            proc = start_nginx(ctx.procs, name, build(ports, ctx, ctx.workdir / name), ctx.workdir)
            wait_port(ports.server_http if side == "server" else ports.client_http, proc)
            sids.append(proc.pid)
        return pair_endpoints(ports, client_sid=sids[1], server_sid=sids[0])
