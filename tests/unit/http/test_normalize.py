"""Path normalization: every bypass attempt is either normalized onto the path it hides, or refused."""

from __future__ import annotations

import pytest

from proxy.errors import HttpRequestError, RequestRejection
from proxy.http.normalize import normalize_target

#: (sent, what the policy and the app see). Each hides "/admin..." behind another spelling.
NORMALIZED = [
    ("/admin", "/admin"),
    ("/./admin", "/admin"),
    ("/%61dmin", "/admin"),
    ("/%61%64%6D%69%6E/users", "/admin/users"),
    ("//admin", "/admin"),
    ("///admin//users", "/admin/users"),
    ("/admin/../admin", "/admin"),
    ("/x/../admin/users", "/admin/users"),
    ("/../admin", "/admin"),
    ("/../../../admin", "/admin"),
    ("/%2e/admin", "/admin"),
    ("/%2E%2E/admin", "/admin"),
    ("/public/%2e%2e/admin", "/admin"),
    ("/admin/.", "/admin/"),
    ("/admin/users/..", "/admin/"),
    ("/", "/"),
    ("/a%7eb", "/a~b"),
    ("/a%3fb", "/a%3Fb"),      # a reserved escape keeps its meaning, hex uppercased
    ("/a%20b", "/a%20b"),
]

REFUSED = [
    "/admin%2Fusers",           # escaped slash: the app might split where the policy did not
    "/admin%2fusers",
    "/public%2F..%2Fadmin",
    "/admin%5Cusers",           # escaped backslash
    "/admin\\users",            # raw backslash (Windows-style separators)
    "/%zzadmin",                # invalid escape
    "/admin%4",                 # truncated escape
    "/admin%00",                # escaped NUL
    "/admin\x00",
    "/admin users",             # raw space
    "/admin\r\nX-Injected: 1",  # CR/LF
    "/admin#frag",              # a fragment is never sent
    "admin",                    # not origin-form
    "http://evil/admin",        # absolute-form is not accepted by a sidecar
    "*",
    "/adm\u00efn",              # non-ASCII
]


@pytest.mark.parametrize(("sent", "expected"), NORMALIZED)
def test_bypass_spellings_normalize_onto_the_path_they_hide(sent: str, expected: str) -> None:
    assert normalize_target(sent).path == expected


@pytest.mark.parametrize("sent", REFUSED)
def test_paths_that_cannot_be_normalized_safely_are_refused(sent: str) -> None:
    with pytest.raises(HttpRequestError) as info:
        normalize_target(sent)
    assert info.value.rejection is RequestRejection.BAD_PATH


def test_query_is_kept_verbatim_and_not_normalized() -> None:
    n = normalize_target("/./a/?x=%2F..//&y")
    assert (n.path, n.query, n.target) == ("/a/", "x=%2F..//&y", "/a/?x=%2F..//&y")


def test_segments_split_the_normalized_path() -> None:
    assert normalize_target("/").segments == ("",)
    assert normalize_target("/a//b/").segments == ("a", "b", "")


# --- HTTP/1.1 head checks (smuggling defenses h11 leaves to us) -------------------

from proxy.http.h1 import check_head, forwardable  # noqa: E402


@pytest.mark.parametrize(("head", "rejection"), [
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "malformed"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length : 3\r\n\r\n", "malformed"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", "malformed"),
    (b"GET / HTTP/1.1\nHost: a\n\n", "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 2000 + b"\r\n\r\n", "head_too_large"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 2000, "head_too_large"),
    # leading empty lines must not hide the head behind them
    (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "malformed"),
])
def test_smuggling_shapes_are_refused(head: bytes, rejection: str) -> None:
    with pytest.raises(HttpRequestError) as info:
        check_head(head, 1024)
    assert info.value.rejection.value == rejection


def test_a_clean_head_passes_and_an_incomplete_one_asks_for_more() -> None:
    assert check_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET", 1024)
    assert not check_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 1024)


def test_hop_by_hop_and_connection_named_headers_are_not_forwarded() -> None:
    headers = [(b"Host", b"a"), (b"Connection", b"keep-alive, X-Secret"), (b"X-Secret", b"1"),
               (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3"), (b"Accept", b"*/*"),
               (b"x-forwarded-client-cert", b"forged")]
    assert forwardable(headers, frozenset({b"x-forwarded-client-cert"})) == [(b"host", b"a"), (b"accept", b"*/*")]
