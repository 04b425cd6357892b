"""The reference engine's twins of the SPIFFE core, and its chain-size cap.

Split from engine_py_tls.py (one job per module): these are the functions
the engine contract names beside the TLS objects (``parse_spiffe_id``,
``spiffe_id_from_der``, ``verify_x509_svid_chain``), thin calls into
``proxy.spiffe`` with the compiled twin's defaults, and the cap OpenSSL's
max_cert_list applies for the compiled engine.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

from proxy.errors import HandshakeFailure, TlsError
from proxy.tls.openssl_terms import MAX_CERT_LIST


def check_chain_size(chain: Sequence[bytes]) -> None:
    """Refuse a peer chain over MAX_CERT_LIST bytes, as OpenSSL does for the compiled engine.

    OpenSSL counts the Certificate message (each certificate plus a few
    bytes of framing); the DER total is the same limit to within those bytes.
    """
    size = sum(len(der) for der in chain)
    if size > MAX_CERT_LIST:
        raise TlsError(HandshakeFailure.PROTOCOL,
                       f"excessive message size: the peer's chain is {size} bytes (at most {MAX_CERT_LIST})")


def parse_spiffe_id(s: str) -> tuple[str, str]:
    """(trust domain name, path) of a strictly parsed SPIFFE ID; raises InvalidSpiffeIdError."""
    from proxy.spiffe.id import SpiffeId

    sid = SpiffeId.parse(s)
    return sid.trust_domain.name, sid.path


def spiffe_id_from_der(der: bytes) -> str:
    """The one URI SAN of a DER certificate, strictly parsed; raises VerificationError."""
    from proxy.spiffe.svid import spiffe_id_from_der as core

    return str(core(der))


def verify_x509_svid_chain(chain_der: Sequence[bytes], bundles: Mapping[str, Sequence[bytes]],
                           now: float | None = None) -> str:
    """SPIFFE peer verification (the contract's check order); returns the peer's SPIFFE ID.

    ``now=None`` is the current time, as in the compiled twin.
    """
    from proxy.spiffe.verify import verify_x509_svid_chain as core

    return str(core(chain_der, bundles, time.time() if now is None else now))
