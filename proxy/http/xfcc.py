"""The caller's identity for the app: ``x-forwarded-client-cert`` in Envoy's format.

Each element describes one mTLS hop as ``Key=Value`` pairs joined by ``;``
and elements are joined by ``,`` (Envoy's ``forward_client_cert_details``)::

    By=spiffe://example.org/ns/prod/sa/api;Hash=<hex sha256 of the peer leaf DER>;URI=spiffe://example.org/ns/prod/sa/frontend

``By`` is our own SPIFFE ID (the server side of the hop), ``URI`` the
verified peer's, ``Hash`` pins the exact certificate. Modes, as Envoy names
them:

- ``sanitize`` (default): whatever the peer sent is dropped and our element
  is the whole header (Envoy's ``SANITIZE_SET``): the app can trust it
  because only the sidecar can have written it;
- ``append_forward``: the peer's header is kept and our element appended;
- ``forward_only``: the peer's header is forwarded as it came, nothing added.

Values are quoted when they hold ``,``, ``;``, ``=`` or ``"`` (a SPIFFE ID
never does; the rule is there so the format cannot be broken by a value).
"""

from __future__ import annotations

import enum
import hashlib

HEADER = "x-forwarded-client-cert"
_SPECIAL = frozenset(',;="')


class XfccMode(enum.Enum):
    """How an inbound HTTP listener treats the XFCC header (config ``xfcc:``)."""

    SANITIZE = "sanitize"
    APPEND_FORWARD = "append_forward"
    FORWARD_ONLY = "forward_only"


def leaf_hash(leaf_der: bytes) -> str:
    """Envoy's ``Hash``: lowercase hex SHA-256 of the peer's leaf certificate (DER)."""
    return hashlib.sha256(leaf_der).hexdigest()


def _quote(value: str) -> str:
    if not _SPECIAL.intersection(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def element(*, by: str, leaf_sha256: str, uri: str) -> str:
    """One XFCC element for a verified hop."""
    return f"By={_quote(by)};Hash={leaf_sha256};URI={_quote(uri)}"


def outgoing_value(mode: XfccMode, incoming: list[str], own: str) -> str | None:
    """The header value to send to the app (None: send none).

    ``incoming`` are the values the peer sent (possibly several fields);
    ``own`` is our element for this hop.
    """
    if mode is XfccMode.SANITIZE:
        return own
    previous = ",".join(v.strip() for v in incoming if v.strip())
    if mode is XfccMode.FORWARD_ONLY:
        return previous or None
    return f"{previous},{own}" if previous else own


def parse(value: str) -> list[dict[str, str]]:
    """Split an XFCC value into its elements (tests and apps; quoted values honoured)."""
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key, buf, quoted, escaped, in_value = "", [], False, False, False
    for ch in value + ",":
        if quoted:
            if escaped:
                buf.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            else:
                buf.append(ch)
        elif ch == '"' and in_value:
            quoted = True
        elif ch == "=" and not in_value:
            key, buf, in_value = "".join(buf).strip(), [], True
        elif ch in ";,":
            if key:
                current[key] = "".join(buf)
            key, buf, in_value = "", [], False
            if ch == "," and current:
                elements.append(current)
                current = {}
        else:
            buf.append(ch)
    return elements
