"""Issue 11.1: the TLS session cache must not be a memory-exhaustion hole.

A peer that pads its certificate chain with junk certificates and is then
refused (an SVID the policy denies, or a chain nobody trusts) must not make
the server sidecar keep anything: its session is never cached, and the
chain it may send is small. Real sidecar process, real TLS over real
sockets, its RSS read from /proc; both engines.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from support import pki
from support.net import free_port
from support.sidecar import FRONTEND, Identity, SidecarHarness, fastpath_available

#: Connections per attack (SESSION_ATTACKS overrides): about 230 KB each were kept before the fix.
ATTACKS = int(__import__("os").environ.get("SESSION_ATTACKS", "800"))
#: Junk certificates appended to the attacker's chain (the outside run used 40).
JUNK = 40
#: Growth allowed over the attack, in MiB (the old code grew by hundreds).
ALLOWED_GROWTH_MIB = 12


def _junk_certificate() -> bytes:
    """A self-signed RSA-2048 certificate with about a kilobyte of padding: ~2 KB of DER."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "junk")])
    now = dt.datetime.now(dt.timezone.utc)
    pad = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x04\x82\x04\x00" + bytes(1024))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1)).add_extension(pad, critical=False)
            .sign(key, hashes.SHA256()))
    return pki.pem(cert)


def _attacker(directory: Path, ca: pki.Ca, spiffe_id: str, junk: bytes) -> ssl.SSLContext:
    """A client context that sends its SVID followed by JUNK padding certificates."""
    leaf = pki.make_svid(ca, spiffe_id)
    cert_path, key_path = leaf.write_pem(directory, "attacker")
    Path(cert_path).write_bytes(Path(cert_path).read_bytes() + junk * JUNK)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the attacker does not care who the server is
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def _attack_once(ctx: ssl.SSLContext, port: int) -> None:
    """One connection: the handshake, then read until the sidecar closes (it refuses us)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                while tls.recv(4096):
                    pass
        except (OSError, ssl.SSLError):
            pass  # refused: an alert or a reset is what we expect


@pytest.mark.parametrize("engine", ["fastpath", "python"])
@pytest.mark.parametrize("attack", ["denied_svid", "untrusted_chain"])
def test_padded_chain_attack_leaves_server_rss_flat(tmp_path: Path, ca: pki.Ca, rogue_ca: pki.Ca,
                                                    engine: str, attack: str) -> None:
    if engine == "fastpath" and not fastpath_available():
        pytest.skip("the compiled engine is not built")
    port = free_port()
    server = SidecarHarness(tmp_path, runtime="trio", engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                            inbound=[{"name": "in", "listen": f"127.0.0.1:{port}", "forward_to": "127.0.0.1:9",
                                      "policy": "p"}],
                            policy={"p": [{"name": "frontend-only", "allow": [FRONTEND]}]},
                            extra={"log": {"level": "info", "access": "off"}})
    signer = ca if attack == "denied_svid" else rogue_ca  # rogue_ca: example.org by name, in no bundle
    ctx = _attacker(tmp_path, signer, "/intruder", _junk_certificate())
    with server:
        for _ in range(100):  # warm up: imports, allocator arenas, the first sessions
            _attack_once(ctx, port)
        before = server.rss_kib()
        started = time.monotonic()
        for _ in range(ATTACKS):
            _attack_once(ctx, port)
        growth_mib = (server.rss_kib() - before) / 1024
        elapsed = time.monotonic() - started
    assert growth_mib < ALLOWED_GROWTH_MIB, (
        f"{engine}/{attack}: server RSS grew {growth_mib:.1f} MiB over {ATTACKS} padded-chain connections"
        f" ({elapsed:.1f}s)")
