"""Protocol detection (ALPN, h2c preface, HTTP/1.x) and the XFCC header in Envoy's format."""

from __future__ import annotations

import hashlib

import pytest

from proxy.http.detect import H2_PREFACE, HttpVersion, NotHttp, from_alpn, sniff
from proxy.http.xfcc import XfccMode, element, leaf_hash, outgoing_value, parse


def test_alpn_decides_between_sidecars() -> None:
    assert from_alpn("h2") is HttpVersion.H2
    assert from_alpn("http/1.1") is HttpVersion.H1
    assert from_alpn("") is None


@pytest.mark.parametrize(("data", "expected"), [
    (H2_PREFACE, HttpVersion.H2),
    (H2_PREFACE + b"\x00\x00\x00\x04", HttpVersion.H2),
    (b"GET / HTTP/1.1\r\n", HttpVersion.H1),
    (b"POST ", HttpVersion.H1),
    (b"PRI * HTTP/2.0", None),   # may still become the preface
    (b"GE", None),
    (b"", None),
])
def test_first_bytes_decide_on_plaintext(data: bytes, expected: HttpVersion | None) -> None:
    assert sniff(data) is expected


@pytest.mark.parametrize("data", [b"\x16\x03\x01\x02\x00\x01", b"SSH-2.0-OpenSSH_9.2\r\n", b"\r\n\r\n",
                                  b"A" * 40])
def test_non_http_is_refused_never_relayed(data: bytes) -> None:
    with pytest.raises(NotHttp):
        sniff(data)


def test_eof_before_a_request_line_is_not_http() -> None:
    with pytest.raises(NotHttp):
        sniff(b"GE", eof=True)


def test_xfcc_element_is_envoys_format_with_sha256_of_the_leaf() -> None:
    der = b"\x30\x82fake-leaf"
    value = element(by="spiffe://example.org/api", leaf_sha256=leaf_hash(der), uri="spiffe://example.org/web")
    assert value == f"By=spiffe://example.org/api;Hash={hashlib.sha256(der).hexdigest()};URI=spiffe://example.org/web"
    assert parse(value) == [{"By": "spiffe://example.org/api", "Hash": hashlib.sha256(der).hexdigest(),
                             "URI": "spiffe://example.org/web"}]


def test_xfcc_modes() -> None:
    own = "By=spiffe://t/b;Hash=00;URI=spiffe://t/a"
    forged = ["By=spiffe://t/b;Hash=ff;URI=spiffe://t/admin"]
    assert outgoing_value(XfccMode.SANITIZE, forged, own) == own
    assert outgoing_value(XfccMode.SANITIZE, [], own) == own
    assert outgoing_value(XfccMode.APPEND_FORWARD, forged, own) == forged[0] + "," + own
    assert outgoing_value(XfccMode.APPEND_FORWARD, [], own) == own
    assert outgoing_value(XfccMode.FORWARD_ONLY, forged, own) == forged[0]
    assert outgoing_value(XfccMode.FORWARD_ONLY, [], own) is None


def test_xfcc_quotes_values_that_would_break_the_format() -> None:
    value = element(by='a;b="c"', leaf_sha256="00", uri="x,y")
    assert parse(value) == [{"By": 'a;b="c"', "Hash": "00", "URI": "x,y"}]
