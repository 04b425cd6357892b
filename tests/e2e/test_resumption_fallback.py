"""Issue 10.3: an upstream that cannot resume costs a retry, never a failed request.

py-spiffe's ``spiffe-tls`` 0.4.0 servers are pyOpenSSL servers that require
a client certificate and name no session-id context: OpenSSL aborts their
handshake (``internal error``) whenever the client offers a session. Built
here as exactly that, plus a server that simply never resumes; a real
sidecar process's outbound listener in front of each must serve 200
sequential requests without one failure, on both engines.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest
from OpenSSL import SSL

from support import pki
from support.net import free_port, recv_all
from support.sidecar import BACKEND, ENGINES, Identity, SidecarHarness, fastpath_available

REQUESTS = 200


class PyOpenSslServer:
    """A TLS server that answers each connection's request with ``pong`` and closes.

    ``kind``: ``aborting`` requires a client certificate and sets no
    session-id context (OpenSSL then aborts any resumption attempt);
    ``never_resumes`` keeps no sessions and issues no tickets.
    """

    def __init__(self, directory: Path, ca: pki.Ca, kind: str) -> None:
        leaf = pki.make_svid(ca, BACKEND.removeprefix("spiffe://example.org"))
        cert, key = leaf.write_pem(directory, f"upstream-{kind}")
        bundle = directory / f"upstream-{kind}.bundle.pem"
        bundle.write_bytes(pki.pem(ca.cert))
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.use_certificate_chain_file(cert)
        ctx.use_privatekey_file(key)
        ctx.load_verify_locations(str(bundle))
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        if kind == "never_resumes":
            ctx.set_session_id(b"never-resumes")
            ctx.set_options(SSL.OP_NO_TICKET)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        self.ctx = ctx
        self.handshakes = 0
        self.aborted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            raw.setblocking(True)  # pyOpenSSL on a timeout socket raises WantReadError
            conn = SSL.Connection(self.ctx, raw)
            conn.set_accept_state()
            try:
                conn.do_handshake()
                self.handshakes += 1
            except (SSL.Error, OSError):
                self.aborted += 1
                raw.close()
                continue
            try:
                request = conn.recv(64)
                conn.sendall(b"pong:" + request)
                conn.shutdown()
                while conn.recv(64):  # until the client's close_notify: a close with unread data would reset
                    pass
            except (SSL.Error, OSError):
                pass
            finally:
                raw.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["aborting", "never_resumes"])
def upstream(request: pytest.FixtureRequest, tmp_path: Path, ca: pki.Ca) -> Iterator[PyOpenSslServer]:
    server = PyOpenSslServer(tmp_path, ca, request.param)
    yield server
    server.close()


def _request(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"ping")
        sock.shutdown(socket.SHUT_WR)
        try:
            return recv_all(sock)
        except OSError:
            return b""  # a reset: a failed request


@pytest.mark.parametrize("engine", ENGINES)
def test_outbound_serves_every_request_to_an_upstream_that_cannot_resume(tmp_path: Path, ca: pki.Ca, engine: str,
                                                                         upstream: PyOpenSslServer) -> None:
    if engine == "fastpath" and not fastpath_available():
        pytest.skip("the compiled engine is not built")
    port = free_port()
    sidecar = SidecarHarness(tmp_path, runtime="trio", engine=engine, admin=True,
                             identity=Identity.mint(tmp_path, ca, "/frontend"),
                             outbound=[{"name": "out", "listen": f"127.0.0.1:{port}",
                                        "connect_to": f"127.0.0.1:{upstream.port}", "expect": BACKEND}],
                             extra={"log": {"level": "info", "access": "off"}})
    with sidecar:
        answers = [_request(port) for _ in range(REQUESTS)]
        fallbacks = sidecar.metric("spiffe_sidecar_resumption_fallbacks_total", listener="out")
    failures = sum(1 for a in answers if a != b"pong:ping")
    assert failures == 0, f"{failures} of {REQUESTS} requests failed; upstream aborted {upstream.aborted} handshakes"
    if upstream.aborted:  # the aborting server: each refusal was retried once and counted
        assert fallbacks == upstream.aborted
        assert upstream.aborted <= 2, "sessions must stop being offered after a refusal"
