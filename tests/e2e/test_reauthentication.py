"""Long-lived connections outlive their peer's SVID, never the identity that authorized them (issue 11.2).

Real processes: the embedded agent issuing 6-second SVIDs, a frontend
sidecar (outbound) and a backend sidecar (inbound), an echo app, and one
stream kept busy both ways through the pair. Before the fix the backend
closed the stream at the frontend's first NotAfter (peer_cert_expired);
now it re-authenticates the frontend on the same connection (TLS 1.3
post-handshake auth) each time, and closes only when the renewed SVID is
not allowed by the policy in force then.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.agent import AgentProcess, agent_yaml
from support.net import EchoServer, free_port
from support.sidecar import SidecarHarness, eventually, fastpath_available

APP = "spiffe://example.org/app"
TTL = "6s"


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A short directory for the agent's Unix socket (sun_path is 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="reauth-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _combos() -> list[Any]:
    fast = "fastpath" if fastpath_available() else "python"
    return [pytest.param(("trio", fast, "1"), id=f"trio-{fast}-relay-thread"),
            pytest.param(("uvloop", fast, "0"), id=f"uvloop-{fast}-event-loop-relay"),
            pytest.param(("trio", "python", "1"), id="trio-python")]


class Pair:
    """Agent + backend (inbound, policy 'api') + frontend (outbound) + echo app, all real processes."""

    def __init__(self, d: Path, combo: tuple[str, str, str]) -> None:
        runtime, engine, thread = combo
        self.sock = d / "agent.sock"
        self.agent_config = agent_yaml(d, entries=[(APP, [f"unix:uid:{os.getuid()}"])], x509_svid_ttl=TTL)
        self.app, b_port, self.port = EchoServer(), free_port(), free_port()
        identity = {"workload_api": f"unix://{self.sock}"}
        self.backend = SidecarHarness(d, runtime=runtime, engine=engine, identity=identity, admin=True,
                                      name="backend", inbound=[{"name": "api", "listen": f"127.0.0.1:{b_port}",
                                                                "forward_to": f"127.0.0.1:{self.app.port}",
                                                                "policy": "api"}],
                                      policy={"api": [{"name": "app", "allow": [APP]}]})
        self.frontend = SidecarHarness(d, runtime=runtime, engine=engine, identity=identity, name="frontend",
                                       outbound=[{"name": "to-api", "listen": f"127.0.0.1:{self.port}",
                                                  "connect_to": f"127.0.0.1:{b_port}", "expect": APP}])
        for sc in (self.backend, self.frontend):
            sc.process.env["SPIFFE_SIDECAR_RELAY_THREAD"] = thread

    def __enter__(self) -> "Pair":
        self.agent = AgentProcess(self.agent_config, self.sock).__enter__()
        try:
            self.backend.__enter__()
            self.frontend.__enter__()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for part in (self.frontend, self.backend, self.agent):
            try:
                part.__exit__(None, None, None)
            except Exception:
                pass
        self.app.close()


class Stream:
    """One connection through the pair, writing and reading a checked byte pattern both ways until stopped."""

    def __init__(self, port: int, pace: float = 0.002) -> None:
        self.pace = pace  # seconds between 16 KiB writes; 0: as fast as the pair takes them
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sent = self.received = 0
        self.error: str | None = None
        self.stop = threading.Event()
        self.written = threading.Event()  # the writer is done: `sent` is final
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._reader.start()
        self._writer.start()

    @staticmethod
    def _pattern(offset: int, n: int) -> bytes:
        return bytes((offset + i) % 251 for i in range(n))

    def _write(self) -> None:
        try:
            while not self.stop.is_set():
                chunk = self._pattern(self.sent, 16384)
                self.sock.sendall(chunk)
                self.sent += len(chunk)
                if self.pace:
                    time.sleep(self.pace)
        except OSError as exc:
            self.error = self.error or f"write: {exc!r} after {self.sent} bytes"
        finally:
            self.written.set()

    def _read(self) -> None:
        try:
            # Until the writer is done and every byte it sent came back (a chunk in the middle of
            # sendall is not counted yet), looking again at least every 0.2 s.
            while not (self.written.is_set() and self.received >= self.sent):
                if not select.select([self.sock], [], [], 0.2)[0]:
                    continue
                data = self.sock.recv(65536)
                if not data:
                    self.error = self.error or f"EOF after {self.received} of {self.sent} bytes"
                    return
                if data != self._pattern(self.received, len(data)):
                    self.error = f"corrupted bytes at offset {self.received}"
                    return
                self.received += len(data)
        except OSError as exc:
            self.error = self.error or f"read: {exc!r} after {self.received} bytes"

    def finish(self, timeout: float = 20) -> None:
        """Stop writing, read back what is in flight, then end the stream cleanly (FIN, read to EOF)."""
        self.stop.set()
        self._writer.join(timeout)
        self._reader.join(timeout)
        self.ending = _end_cleanly(self.sock)


def _renewed(sc: SidecarHarness) -> list[dict[str, Any]]:
    return [r for r in sc.reauth_records() if r["outcome"] == "renewed"]


@pytest.mark.parametrize("pace", [0.002, 0.05], ids=["busy", "quiet"])
@pytest.mark.parametrize("combo", _combos())
def test_a_stream_survives_four_rotations_with_every_reauthentication_logged(
        combo: tuple[str, str, str], pace: float, short_dir: Path) -> None:
    _survives_four_rotations(combo, short_dir, pace=pace)


@pytest.mark.xfail(strict=False, reason=(
    "known defect, open: at full speed both ways the server sidecar's TLS stack sometimes fails the "
    "connection with 'bad length' while the post-handshake answer is read (a handshake record meets a "
    "partly written application record); seen on both engines and both relays"))
@pytest.mark.parametrize("combo", _combos())
def test_a_saturated_stream_survives_reauthentication_with_writes_pending_on_both_sides(
        combo: tuple[str, str, str], short_dir: Path) -> None:
    # Full speed both ways: TLS writes are often partly done when a certificate request or its answer
    # must go out, which OpenSSL cannot interleave (the sidecars wait for a moment between writes).
    _survives_four_rotations(combo, short_dir, pace=0.0)


def _survives_four_rotations(combo: tuple[str, str, str], short_dir: Path, *, pace: float) -> None:
    with Pair(short_dir, combo) as pair:
        stream = Stream(pair.port, pace)
        closed_early: list[Any] = []
        try:
            eventually(lambda: stream.received > 1 << 20 or stream.error is not None, 10, "bytes flowing")
            eventually(lambda: len(_renewed(pair.backend)) >= 4 or stream.error is not None, 45,
                       "four re-authentications with renewed SVIDs")
            closed_early = [r for r in pair.backend.records() if r["listener"] == "api"]
        finally:
            stream.finish()
        assert stream.error is None, f"{stream.error}\n{pair.backend.log()[-3000:]}"
        assert stream.received == stream.sent > 0
        assert not closed_early, f"the stream was closed during the rotations: {closed_early}"
        # The app's own end after all those re-authentications is still an orderly end on both sides.
        assert stream.ending == "eof", stream.ending
        for sc, listener in ((pair.backend, "api"), (pair.frontend, "to-api")):
            record = sc.wait_record(lambda r: r["listener"] == listener, 10)
            assert record["close_reason"] == "completed", record
        reauths = pair.backend.reauth_records()
        renewed = _renewed(pair.backend)
        assert len({r["not_after"] for r in renewed}) == len(renewed), "each renewal is a new certificate"
        assert all(r["peer_id"] == APP and r["listener"] == "api" for r in reauths), reauths
        assert not [r for r in reauths if r["outcome"] in ("failed", "denied", "unsupported")], reauths
        assert pair.backend.metric("spiffe_sidecar_reauthentications_total", listener="api",
                                   outcome="renewed") == len(renewed)


@pytest.mark.parametrize("combo", _combos()[:2])
def test_a_peer_the_current_policy_no_longer_allows_is_closed_at_its_reauthentication(
        combo: tuple[str, str, str], short_dir: Path) -> None:
    with Pair(short_dir, combo) as pair:
        stream = Stream(pair.port)
        try:
            eventually(lambda: stream.received > 1 << 16, 10, "bytes flowing")
            pair.backend.write_policy('{"policies": {"api": [{"name": "only-batch",'
                                      ' "allow": ["spiffe://example.org/batch"]}]}}')
            eventually(lambda: "reload" in pair.backend.log(), 10, "the new policy is loaded")
            eventually(lambda: stream.error is not None, 20, "the stream is closed at the next re-authentication")
        finally:
            stream.finish()
        denied = [r for r in pair.backend.reauth_records() if r["outcome"] == "denied"]
        assert len(denied) == 1 and denied[0]["peer_id"] == APP and denied[0]["reason"] == "no_matching_rule"
        (record,) = [r for r in pair.backend.records() if r["listener"] == "api"]
        assert record["close_reason"] == "denied" and record["decision"] == "deny"
        assert "re-authentication" in record["detail"] and "current policy" in record["detail"], record
        assert "Reset" in (stream.error or ""), f"a refused stream is cut with a reset: {stream.error}"


def test_peers_that_cannot_be_asked_are_logged_and_closed_at_their_not_after(tmp_path: Path) -> None:
    import datetime as dt
    import ssl

    from support import pki
    from support.sidecar import Identity, read_exactly

    ca = pki.make_ca("example.org")
    app, port = EchoServer(), free_port()
    engine = "fastpath" if fastpath_available() else "python"
    backend = SidecarHarness(tmp_path, runtime="trio", engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                             inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                       "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                             policy={"api": [{"name": "app", "allow": [APP]}]})

    def client(lifetime: dt.timedelta, tls12: bool) -> ssl.SSLSocket:
        # Valid from a minute ago: about `lifetime - 1 min` of service left.
        leaf = pki.make_svid(ca, "/app", lifetime=lifetime,
                             not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
        cert, key = leaf.write_pem(tmp_path, f"app{int(tls12)}")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(str(cert), str(key))
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.post_handshake_auth = False  # Python's default: no post_handshake_auth extension offered
        return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15))

    try:
        with backend:
            old = client(dt.timedelta(minutes=1, seconds=8), tls12=True)
            new = client(dt.timedelta(minutes=1, seconds=8), tls12=False)
            for tls in (old, new):
                tls.sendall(b"hi")
                assert read_exactly(tls, 2) == b"hi"
            eventually(lambda: len(backend.reauth_records()) >= 2, 10, "both logged as unsupported")
            eventually(lambda: len([r for r in backend.records() if r["listener"] == "api"]) >= 2, 15,
                       "both closed at their NotAfter")
            old.close()
            new.close()
    finally:
        app.close()
    reauths = backend.reauth_records()
    assert sorted(r["outcome"] for r in reauths) == ["unsupported", "unsupported"], reauths
    details = " | ".join(r["detail"] for r in reauths)
    assert "TLSv1.2 has no post-handshake authentication" in details and "did not offer" in details, details
    closes = [r["close_reason"] for r in backend.records() if r["listener"] == "api"]
    assert closes == ["peer_cert_expired", "peer_cert_expired"], closes


def _end_cleanly(sock: socket.socket) -> str:
    """Half-close, then read to the end: 'eof' for an orderly end, else what went wrong."""
    sock.settimeout(10)
    try:
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
        return "eof"
    except OSError as exc:
        return repr(exc)
    finally:
        sock.close()


@pytest.mark.parametrize("last_word", [True, False], ids=["then-a-request", "then-silence"])
@pytest.mark.parametrize("combo", _combos())
def test_an_idle_session_is_reauthenticated_and_still_ends_cleanly(combo: tuple[str, str, str], last_word: bool,
                                                                  short_dir: Path) -> None:
    # An idle database session: one exchange, then silence across several renewals, then the app's own end.
    with Pair(short_dir, combo) as pair:
        with socket.create_connection(("127.0.0.1", pair.port), timeout=10) as sock:
            sock.sendall(b"hello")
            assert sock.recv(5) == b"hello"
            eventually(lambda: len(_renewed(pair.backend)) >= 3, 30, "three renewals while idle")
            if last_word:
                sock.sendall(b"still here")
                got = b""
                while len(got) < 10:
                    got += sock.recv(10 - len(got))
                assert got == b"still here"
            ending = _end_cleanly(sock)
        assert ending == "eof", ending
        for sc, listener in ((pair.backend, "api"), (pair.frontend, "to-api")):
            record = sc.wait_record(lambda r: r["listener"] == listener, 10)
            assert record["close_reason"] == "completed", record
