"""The soak's moving parts: the echo app, the request load, the attacks and the process probes.

Everything here talks to 127.0.0.1 only and is bounded: each loop ends at a
deadline (and the load at a request count), each attack round opens a fixed
number of sockets and closes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ATTACKER = "spiffe://example.org/attacker"


class EchoApp:
    """The app behind the backend sidecar: echoes every byte, one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                while chunk := conn.recv(65536):
                    conn.sendall(chunk)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@dataclass
class LoadStats:
    """What the request load saw (updated by its threads; read at the end)."""

    requests: int = 0
    failures: int = 0
    bytes_verified: int = 0
    first_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, what: str) -> None:
        with self.lock:
            self.failures += 1
            if len(self.first_errors) < 10:
                self.first_errors.append(f"{time.strftime('%H:%M:%S')} {what}")


def run_load(port: int, payload_size: int, deadline: float, stats: LoadStats, max_requests: int) -> None:
    """One load worker: a new connection per request, a random payload echoed back and compared."""
    while time.monotonic() < deadline and stats.requests < max_requests:
        payload = os.urandom(payload_size)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                got = bytearray()
                while chunk := sock.recv(65536):
                    got += chunk
            if hashlib.sha256(got).digest() != hashlib.sha256(payload).digest():
                stats.failed(f"echo mismatch: {len(got)} of {len(payload)} bytes")
            else:
                with stats.lock:
                    stats.bytes_verified += 2 * len(payload)
        except OSError as exc:
            stats.failed(f"{type(exc).__name__}: {exc}")
        with stats.lock:
            stats.requests += 1


#: Where the attacks come from: loopback addresses of their own, as another host would be, so a
#: per-source limit can tell them from the frontend sidecar (127.0.0.1).
FLOOD_SOURCE, PADDED_SOURCE = "127.0.0.2", "127.0.0.3"


def handshake_flood(port: int, count: int, hold: float) -> int:
    """Open ``count`` TCP connections that never start TLS, hold them, close them; how many opened."""
    held = []
    try:
        for _ in range(count):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2,
                                                     source_address=(FLOOD_SOURCE, 0)))
            except OSError:
                break
        time.sleep(hold)
        return len(held)
    finally:
        for s in held:
            s.close()


def padded_chain(state_dir: Path, workdir: Path, junk: int) -> tuple[Path, Path]:
    """An SVID of the trust domain that the policy denies, its chain padded with ``junk`` junk certificates.

    About 1.8 KB each: 40 of them stay under OpenSSL's 100 KB default limit
    on a received certificate list, so the chain reaches verification.

    Signed with the agent's oldest unexpired authority from its state
    directory (the one every sidecar has in its bundle), so the chain
    verifies and only authorization refuses it: the costliest refusal.
    """
    authorities = []
    for path in sorted((state_dir / "ca" / "example.org").glob("authority-*.pem")):
        data = path.read_bytes()
        cert = x509.load_pem_x509_certificate(data)
        key_pem = data[data.index(b"-----BEGIN PRIVATE KEY-----"):].split(b"-----END PRIVATE KEY-----")[0]
        authorities.append((cert, serialization.load_pem_private_key(key_pem + b"-----END PRIVATE KEY-----\n", None)))
    ca_cert, ca_key = min(authorities, key=lambda a: a[0].not_valid_before_utc)
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=30)).not_valid_after(now + dt.timedelta(minutes=10))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ATTACKER)]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    junk_key = ec.generate_private_key(ec.SECP256R1())
    for n in range(junk):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"junk-{n}-" + "x" * 40)])
        pem += (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(junk_key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"),
                                                          os.urandom(1500)), critical=False)
                .sign(junk_key, hashes.SHA256())).public_bytes(serialization.Encoding.PEM)
    chain, key_path = workdir / "attacker-chain.pem", workdir / "attacker.key"
    chain.write_bytes(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_path


def padded_chain_attack(port: int, chain: Path, key: Path, count: int) -> int:
    """``count`` mTLS connections presenting the padded chain; how many the sidecar let through (should be 0)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the attacker does not care who the server is
    ctx.load_cert_chain(chain, key)
    through = 0
    for _ in range(count):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(PADDED_SOURCE, 0)) as raw:
                with ctx.wrap_socket(raw) as tls:
                    tls.sendall(b"let me in")
                    if tls.recv(9):
                        through += 1
        except OSError:
            pass  # refused: the expected outcome
    return through


def admin_json(port: int, path: str) -> dict[str, object]:
    """GET an admin endpoint's JSON (any status)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read()))


def metric(port: int, name: str, label: str = "") -> float:
    """Sum of a metric's samples from an admin endpoint's /metrics (those whose labels contain ``label``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and len(line) > len(name) and line[len(name)] in " {" and label in line)


def by_label(port: int, name: str, label: str, where: str = "") -> dict[str, float]:
    """A metric's samples summed per value of one label, e.g. handshake failures per reason."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'{label}="' in line and where in line:
            value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            out[value] = out.get(value, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def usage(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open fds) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))
