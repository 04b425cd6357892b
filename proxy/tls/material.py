"""The DER snapshot a TLS engine builds its contexts from.

Only bytes, str and int cross into the engines: never pyOpenSSL or
cryptography objects (the compiled engine links a different OpenSSL than
the one cryptography bundles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsMaterial:
    """Everything needed to build a server or client TLS context.

    Attributes:
        spiffe_id: our own SPIFFE ID (the URI SAN of chain_der[0]).
        chain_der: our X.509-SVID chain, DER, leaf first, then intermediates.
        key_der: our private key, PKCS#8 DER (unencrypted, kept in memory only).
        bundles: trust domain name (e.g. "example.org", no scheme) -> its
            X.509 authorities (DER CA certificates). Our own trust domain and
            every federated one; never merged: a peer is verified only against
            the authorities of the trust domain its SPIFFE ID names.
        not_after: our leaf's NotAfter, Unix seconds.
        generation: increases with every new snapshot; sessions and caches
            keyed by it never outlive the material they were made with.
    """

    spiffe_id: str
    chain_der: tuple[bytes, ...]
    key_der: bytes
    bundles: Mapping[str, tuple[bytes, ...]] = field(default_factory=lambda: MappingProxyType({}))
    not_after: float = 0.0
    generation: int = 0
