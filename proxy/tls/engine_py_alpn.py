"""The TLS facts the HTTP layer needs, in the reference engine (twins of _fastpath_http.pxi).

ALPN is offered or accepted per connection before its handshake, and the
verified peer's leaf is read after it (the XFCC Hash). The server's
selection callback lives with the contexts in engine_py_tls.py.
"""

from __future__ import annotations

from typing import Sequence

from cryptography.hazmat.primitives import serialization

from proxy.tls import contract
from proxy.tls.engine_py_tls import TlsConnection

_ALPN_LISTS = frozenset({("h2", "http/1.1"), ("http/1.1",), ("h2",)})


def _own(conn: contract.TlsConnection) -> TlsConnection:
    if not isinstance(conn, TlsConnection):  # as the compiled twin's typed argument refuses a stranger
        raise TypeError(f"needs this engine's TlsConnection, not {type(conn).__name__}")
    return conn


def offer_alpn(conn: contract.TlsConnection, protocols: Sequence[str]) -> None:
    """Before the handshake: offer (client) or accept (server, in this preference) these ALPN IDs."""
    own = _own(conn)
    key = tuple(protocols)
    if key not in _ALPN_LISTS:
        raise ValueError(f"unsupported ALPN list {key!r}; one of {sorted(_ALPN_LISTS)}")
    wire = [p.encode("ascii") for p in key]
    if own._server:
        own._alpn_accept = tuple(wire)
    else:
        own.ssl.set_alpn_protos(wire)


def selected_alpn(conn: contract.TlsConnection) -> str:
    """The ALPN protocol the handshake agreed on, or "" when none."""
    return _own(conn).ssl.get_alpn_proto_negotiated().decode("ascii", "replace")


def peer_leaf_der(conn: contract.TlsConnection) -> bytes:
    """The verified peer's leaf certificate, DER (b"" before the handshake completed)."""
    leaf = _own(conn).ssl.get_peer_certificate(as_cryptography=True)
    return b"" if leaf is None else leaf.public_bytes(serialization.Encoding.DER)
