"""Parity: building a context from bad identity material fails the same way in both engines.

Material is validated when it arrives, so a failure here means a bug or a
corrupt snapshot; callers (the identity swap) catch one error type,
``TlsError`` with reason INTERNAL, whichever engine runs, and the message
names the part that is wrong. The compiled engine appends OpenSSL's reason
string after a colon; that text comes from two different OpenSSL builds,
so only what precedes it is compared.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import serialization
from support import pki
from support.combos import ENGINES, engine_module

from proxy.errors import HandshakeFailure, TlsError
from proxy.tls.material import TlsMaterial

@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    root = pki.make_ca("example.org")
    inter = pki.make_ca("example.org", parent=root)
    return dict(root=root, leaf=pki.make_svid(inter, "/a"), other=pki.make_svid(root, "/b"))


def _material(w: dict[str, Any], chain: list[bytes] | None = None, key: bytes | None = None) -> TlsMaterial:
    return pki.tls_material(w["leaf"], {"example.org": (w["root"].der,)}, chain_der=chain, key_der=key)


def _encrypted_key(w: dict[str, Any]) -> bytes:
    return w["leaf"].key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,  # type: ignore[no-any-return]
                                       serialization.BestAvailableEncryption(b"secret"))


# case -> (material, the message both engines give, up to OpenSSL's own text)
CASES: dict[str, tuple[Callable[[dict[str, Any]], TlsMaterial], str]] = {
    "key_of_another_certificate": (lambda w: _material(w, key=w["other"].key_der),
                                   "our key does not match our certificate"),
    "key_not_der": (lambda w: _material(w, key=b"not a key"), "our key is not a PKCS#8 DER key"),
    "key_encrypted": (lambda w: _material(w, key=_encrypted_key(w)), "our key is not a PKCS#8 DER key"),
    "leaf_not_der": (lambda w: _material(w, chain=[b"junk", *w["leaf"].chain_der[1:]]),
                     "our chain_der[0] is not a DER certificate"),
    "intermediate_not_der": (lambda w: _material(w, chain=[w["leaf"].chain_der[0], b"junk"]),
                             "our chain_der[1] is not a DER certificate"),
    "no_chain": (lambda w: _material(w, chain=[]), "TLS material has no certificate chain"),
}


@pytest.mark.parametrize("side", ["ServerContext", "ClientContext"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("engine_name", ENGINES)
def test_bad_identity_material_raises_internal_tls_error(world: dict[str, Any], engine_name: str, case: str,
                                                        side: str) -> None:
    make, expected = CASES[case]
    context_type = getattr(engine_module(engine_name), side)
    with pytest.raises(TlsError) as info:
        context_type(make(world))
    assert info.value.reason is HandshakeFailure.INTERNAL
    assert info.value.detail.split(": ")[0] == expected


@pytest.mark.parametrize("engine_name", ENGINES)
def test_good_identity_material_builds_both_contexts(world: dict[str, Any], engine_name: str) -> None:
    engine = engine_module(engine_name)
    material = _material(world)
    assert engine.ServerContext(material).generation == engine.ClientContext(material).generation == 1
