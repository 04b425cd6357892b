#!/usr/bin/env python3
"""In-process TLS engine benchmark: mutual-TLS handshake pairs/s, resumed pairs/s, relay MB/s.

    python bench/bench_handshake.py                      # both engines, 3 s per figure
    python bench/bench_handshake.py --seconds 10 --engine fastpath --mode handshake
    python bench/bench_handshake.py --engine raw         # pyOpenSSL without SPIFFE checks

What is measured, all in one process and one thread over socketpairs (no
network, no event loop, so the figure is the engine's own cost):

- handshake: full mutual TLS 1.3 handshakes, both ends in this process, with
  the engine's SPIFFE verification on both sides (ECDSA P-256 SVIDs from
  bench/pki.py, the same certificates the side-by-side benchmark uses). One
  "pair" is a server and a client handshake, so the CPU of both is counted.
- resume: the same with a session resumed through the client's session_key.
- relay: bytes from a plaintext source through client Relay -> TLS -> server
  Relay to a plaintext sink, driven by select() like the runtime.

Engines: "fastpath" (proxy._fastpath, the OpenSSL it was built against),
"python" (proxy.tls.engine_py: pyOpenSSL + the pure-Python SPIFFE verifier),
and "raw" (bare pyOpenSSL on cryptography's bundled OpenSSL with no SPIFFE
verification at all: the ceiling for that OpenSSL, to tell the cost of the
OpenSSL version apart from the cost of verification). Each run is bounded
by --seconds per figure.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from bench.pki import TRUST_DOMAIN, write_pki  # noqa: E402
from proxy.tls.material import TlsMaterial  # noqa: E402

MIB = 1 << 20


def load_materials() -> tuple[TlsMaterial, TlsMaterial]:
    """Server and client TlsMaterial from the benchmark's PKI files."""
    with tempfile.TemporaryDirectory() as tmp:
        files = write_pki(Path(tmp))
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes()).public_bytes(serialization.Encoding.DER)

        def material(svid: Any) -> TlsMaterial:
            cert = x509.load_pem_x509_certificate(svid.cert.read_bytes())
            key = serialization.load_pem_private_key(svid.key.read_bytes(), None)
            key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            return TlsMaterial(spiffe_id="", chain_der=(cert.public_bytes(serialization.Encoding.DER),),
                               key_der=key_der, bundles={TRUST_DOMAIN: (ca,)})

        return material(files.server), material(files.client)


class RawEngine:
    """Bare pyOpenSSL with the engine API's shape: no SPIFFE verification, no sessions."""

    NAME = "raw"
    DONE, WANT_READ, WANT_WRITE = 0, 1, 2

    class _Conn:
        def __init__(self, ctx: Any, fd: int, server: bool) -> None:
            from OpenSSL import SSL

            self._SSL = SSL
            self.c = SSL.Connection(ctx, fd)
            self.c.set_accept_state() if server else self.c.set_connect_state()

        def handshake(self) -> int:
            try:
                self.c.do_handshake()
            except self._SSL.WantReadError:
                return 1
            except self._SSL.WantWriteError:
                return 2
            return 0

        def close(self) -> None:
            pass

    class _Ctx:
        def __init__(self, material: TlsMaterial, server: bool) -> None:
            from OpenSSL import SSL

            ctx = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
            ctx.use_certificate(x509.load_der_x509_certificate(material.chain_der[0]))
            ctx.use_privatekey(serialization.load_der_private_key(material.key_der, None))  # type: ignore[arg-type]
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *a: True)
            self.ctx, self.server = ctx, server

        def new_connection(self, fd: int, session_key: str | None = None) -> Any:
            return RawEngine._Conn(self.ctx, fd, self.server)

    @staticmethod
    def ServerContext(material: TlsMaterial) -> Any:  # noqa: N802 - the engine API's name
        return RawEngine._Ctx(material, True)

    @staticmethod
    def ClientContext(material: TlsMaterial) -> Any:  # noqa: N802
        return RawEngine._Ctx(material, False)


def load_engine(name: str) -> Any:
    if name == "raw":
        return RawEngine
    if name == "fastpath":
        from proxy import _fastpath  # type: ignore[attr-defined]

        return _fastpath
    from proxy.tls import engine_py

    return engine_py


def _handshake(engine: Any, server: Any, client: Any) -> None:
    """Alternate the two ends until both are done (a socketpair never needs a wait)."""
    done_s = done_c = False
    for _ in range(100):
        done_c = done_c or client.handshake() == engine.DONE
        done_s = done_s or server.handshake() == engine.DONE
        if done_s and done_c:
            return
    raise RuntimeError("handshake made no progress")


def bench_handshakes(engine: Any, seconds: float, resume: bool) -> tuple[float, float]:
    """Completed handshake pairs per wall-clock second and per CPU second of this process.

    The CPU figure is the one to compare across runs on a shared machine:
    other processes stretch the wall clock, not our CPU time.
    """
    server_m, client_m = load_materials()
    server_ctx, client_ctx = engine.ServerContext(server_m), engine.ClientContext(client_m)
    key = "bench" if resume else None
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        server = server_ctx.new_connection(a.fileno())
        client = client_ctx.new_connection(b.fileno(), key) if resume else client_ctx.new_connection(b.fileno())
        _handshake(engine, server, client)
        if resume:
            # Read the server's tickets and close cleanly so the session stays resumable.
            plain, other = socket.socketpair()
            plain.setblocking(False)
            engine.Relay(client, plain.fileno()).tls_to_plain()
            client.shutdown()
            plain.close()
            other.close()
        server.close()
        client.close()
        a.close()
        b.close()
        count += 1
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def bench_relay(engine: Any, seconds: float, buffer_size: int) -> tuple[float, float]:
    """MB/s (10^6 bytes) through client Relay -> TLS -> server Relay, one direction (wall, CPU)."""
    server_m, client_m = load_materials()
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    server = engine.ServerContext(server_m).new_connection(a.fileno())
    client = engine.ClientContext(client_m).new_connection(b.fileno())
    _handshake(engine, server, client)
    src_app, src_relay = socket.socketpair()
    dst_relay, dst_app = socket.socketpair()
    for s in (src_app, src_relay, dst_relay, dst_app):
        s.setblocking(False)
    up, down = engine.Relay(client, src_relay.fileno(), buffer_size), engine.Relay(server, dst_relay.fileno(), buffer_size)
    chunk, sink = memoryview(bytes(256 * 1024)), bytearray(256 * 1024)
    moved, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    # One thread owns every socket here, so each stage always has work once
    # the previous one ran: fill the source, pump both relays, drain the sink.
    while time.perf_counter() < deadline:
        try:
            while src_app.send(chunk):
                pass
        except BlockingIOError:
            pass
        up.plain_to_tls()
        down.tls_to_plain()
        try:
            while (n := dst_app.recv_into(sink)) > 0:
                moved += n
        except BlockingIOError:
            pass
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    for s in (a, b, src_app, src_relay, dst_relay, dst_app):
        s.close()
    return moved / elapsed / 1e6, moved / cpu_used / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=["fastpath", "python", "raw", "both", "all"], default="both")
    p.add_argument("--mode", choices=["handshake", "resume", "relay", "all"], default="all")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each figure (bounded run)")
    p.add_argument("--buffer-size", type=int, default=65536, help="relay buffer per direction")
    args = p.parse_args(argv)
    engines = {"both": ["fastpath", "python"], "all": ["fastpath", "python", "raw"]}.get(args.engine, [args.engine])
    modes = ["handshake", "resume", "relay"] if args.mode == "all" else [args.mode]
    for name in engines:
        engine = load_engine(name)
        ssl = engine.openssl_version() if hasattr(engine, "openssl_version") else _pyopenssl_version()
        for mode in modes:
            if name == "raw" and mode != "handshake":
                continue
            if mode == "relay":
                (wall, per_cpu), unit = bench_relay(engine, args.seconds, args.buffer_size), "MB/s"
            else:
                (wall, per_cpu), unit = bench_handshakes(engine, args.seconds, mode == "resume"), "pairs/s"
            print(f"{name:9s} {mode:9s} {wall:9.1f} {unit:7s} {per_cpu:9.1f} per CPU-s  ({ssl})", flush=True)
    return 0


def _pyopenssl_version() -> str:
    from OpenSSL import SSL

    return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()


if __name__ == "__main__":
    sys.exit(main())
