"""Which engine runs, and that both engines expose the same contract (names, constants, .pyi)."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

import proxy
from support.combos import engine_module, engine_params, fastpath, fastpath_available, requires_fastpath

from proxy.tls import engine_py

_fastpath: Any = fastpath() if fastpath_available() else None

CONTRACT = ["NAME", "DONE", "WANT_READ", "WANT_WRITE", "WANT_TLS_READ", "WANT_TLS_WRITE", "WANT_PLAIN_READ",
            "WANT_PLAIN_WRITE", "EOF", "ServerContext", "ClientContext", "TlsConnection", "Relay",
            "parse_spiffe_id", "spiffe_id_from_der", "verify_x509_svid_chain", "classify_tls_error",
            "offer_alpn", "selected_alpn", "peer_leaf_der"]
CONSTANTS = [n for n in CONTRACT if n.isupper() and n != "NAME"]


def _engine_in_subprocess(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_SIDECAR_")}
    out = subprocess.run([sys.executable, "-c", "from proxy.tls.engine import load_engine; print(load_engine().NAME)"],
                         env={**clean, **env}, capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(proxy.__file__).parent.parent)
    return out.stdout.strip()


@requires_fastpath
def test_compiled_engine_is_the_default() -> None:
    assert _engine_in_subprocess() == "fastpath"


def test_no_extensions_env_selects_the_python_engine() -> None:
    assert _engine_in_subprocess(SPIFFE_SIDECAR_NO_EXTENSIONS="1") == "python"


@pytest.mark.parametrize("engine_name", engine_params())
def test_engine_exposes_the_whole_contract(engine_name: str) -> None:
    engine = engine_module(engine_name)
    missing = [name for name in CONTRACT if not hasattr(engine, name)]
    assert missing == []


@requires_fastpath
def test_both_engines_use_the_same_status_numbers() -> None:
    assert {n: getattr(_fastpath, n) for n in CONSTANTS} == {n: getattr(engine_py, n) for n in CONSTANTS}
    relay = [getattr(_fastpath, n) for n in CONSTANTS if n.startswith(("WANT_TLS", "WANT_PLAIN", "EOF"))]
    assert len(set(relay)) == len(relay)


@pytest.mark.parametrize("detail", ["wrong version number", "http request", "peer did not return a certificate",
                                    "tlsv1 alert unknown ca", "unexpected eof while reading", "no shared cipher",
                                    "unsupported protocol", "sslv3 alert certificate expired", ""])
@requires_fastpath
def test_both_engines_classify_openssl_errors_alike(detail: str) -> None:
    assert _fastpath.classify_tls_error(detail) is engine_py.classify_tls_error(detail)


@requires_fastpath
def test_stub_file_matches_the_compiled_module() -> None:
    stub = pathlib.Path(proxy.__file__).parent / "_fastpath.pyi"
    tree = ast.parse(stub.read_text())
    declared: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            declared[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} \
                if isinstance(node, ast.ClassDef) else set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared[node.target.id] = set()
    public = {n for n in dir(_fastpath) if not n.startswith("_") and not isinstance(getattr(_fastpath, n), type(os))
              and getattr(getattr(_fastpath, n), "__module__", _fastpath.__name__) == _fastpath.__name__}
    assert public == set(declared), "the .pyi and the module disagree on public names"
    for name, members in declared.items():
        obj = getattr(_fastpath, name)
        for member in members - {"__init__"}:
            assert hasattr(obj, member), f"{name}.{member} is in the .pyi but not in the module"


@requires_fastpath
def test_fastpath_reports_the_openssl_it_drives() -> None:
    assert _fastpath.openssl_version().startswith("OpenSSL ")


def test_certificate_message_parser_reads_both_tls_versions_and_refuses_truncation() -> None:
    # The reference engine's in-handshake verification reads the peer's chain from this message.
    from proxy.tls.engine_py_verify import certificate_list

    certs = [b"\x30\x03\x02\x01\x01", b"\x30\x03\x02\x01\x02"]
    tls12_list = b"".join(len(c).to_bytes(3, "big") + c for c in certs)
    tls12 = b"\x0b" + (len(tls12_list) + 3).to_bytes(3, "big") + len(tls12_list).to_bytes(3, "big") + tls12_list
    tls13_list = b"".join(len(c).to_bytes(3, "big") + c + b"\x00\x00" for c in certs)
    body13 = b"\x00" + len(tls13_list).to_bytes(3, "big") + tls13_list
    tls13 = b"\x0b" + len(body13).to_bytes(3, "big") + body13
    assert certificate_list(tls12, tls13=False) == certs
    assert certificate_list(tls13, tls13=True) == certs
    for bad, is_tls13 in ((tls12[:-1], False), (tls12[:8], False), (tls13[:-2], True), (tls12, True)):
        with pytest.raises((ValueError, IndexError)):
            certificate_list(bad, tls13=is_tls13)
