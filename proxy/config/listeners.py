"""Readers of sidecar.yaml's explicit listeners: the ``inbound`` and ``outbound`` lists.

A listener name is a log field and a metric label, so it must be unique
across both lists and must not be one of the names the sidecar gives its own
transparent listeners (``RESERVED_LISTENER_NAMES``): otherwise two
listeners' connections would be counted as one in every metric.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from ruamel.yaml.comments import CommentedMap

from proxy.config.checks import address, enum_choice
from proxy.config.envfields import Fields
from proxy.config.http import read_protocol
from proxy.config.model import HostPort, InboundListener, Limits, OutboundListener, TlsSettings
from proxy.config.sections import read_limits, read_tls
from proxy.config.transparent import RESERVED_LISTENER_NAMES
from proxy.yamlfields import Section
from proxy.config.values import PeerExpiry
from proxy.errors import ConfigError
from proxy.policy.load import NAME_RE, read_peer_patterns

T = TypeVar("T")
Listeners = tuple[tuple[InboundListener, ...], tuple[OutboundListener, ...]]


def check_listener_name(value: str) -> str:
    """A listener name: NAME_RE characters, and not a reserved one."""
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"invalid listener name {value!r}: 1-128 characters from letters, digits, '.', '_', '-'")
    if value in RESERVED_LISTENER_NAMES:
        reserved = ", ".join(sorted(RESERVED_LISTENER_NAMES))
        raise ValueError(f"listener name {value!r} is reserved: the transparent listeners use it in access logs"
                         f" and metric labels (reserved: {reserved})")
    return value


def _loopback_only(sec: Section, key: str, addr: HostPort, opt_out: str, what: str) -> None:
    if not addr.is_loopback and not sec.take(opt_out, bool, default=False):
        raise sec.error(key, f"{addr} is not a loopback address: {what} stays on this host unless"
                        f" {opt_out}: true is set")


def read_inbound(sec: Section, limits: Limits, tls: TlsSettings = TlsSettings()) -> InboundListener:
    """Read one ``inbound[]`` item."""
    name = sec.take("name", str, required=True, check=check_listener_name)
    listen = sec.take("listen", str, required=True, check=address(ip_only=True))
    forward_to = sec.take("forward_to", str, required=True, check=address())
    _loopback_only(sec, "forward_to", forward_to, "allow_non_loopback_forward", "plaintext to the app")
    optout = bool(sec.take("allow_non_loopback_forward", bool, default=False))
    policy = sec.take("policy", str, required=True)
    expiry = sec.take("peer_expiry", str, default=PeerExpiry.REAUTHENTICATE, check=enum_choice(PeerExpiry))
    own = own_limits(sec, limits)
    own_settings = own_tls(sec, tls)
    protocol, http = read_protocol(sec, inbound=True)
    sec.finish()
    return InboundListener(name=name, listen=listen, forward_to=forward_to, policy=policy,
                           allow_non_loopback_forward=optout, limits=own, tls=own_settings, peer_expiry=expiry,
                           line=sec.line,
                           policy_line=sec.line_of("policy"), protocol=protocol, http=http)


def read_outbound(sec: Section, limits: Limits, tls: TlsSettings = TlsSettings()) -> OutboundListener:
    """Read one ``outbound[]`` item."""
    name = sec.take("name", str, required=True, check=check_listener_name)
    listen = sec.take("listen", str, required=True, check=address(ip_only=True))
    _loopback_only(sec, "listen", listen, "allow_non_loopback_listen", "plaintext from the app")
    optout = bool(sec.take("allow_non_loopback_listen", bool, default=False))
    connect_to = sec.take("connect_to", str, required=True, check=address())
    if not sec.has("expect"):
        raise sec.missing("expect", "is required: the SPIFFE ID (pattern) the upstream must present")
    expect = read_peer_patterns(sec, "expect", single_ok=True)
    expiry = sec.take("peer_expiry", str, default=PeerExpiry.KEEP, check=_outbound_expiry)
    own = own_limits(sec, limits)
    own_settings = own_tls(sec, tls)
    protocol, http = read_protocol(sec, inbound=False)
    sec.finish()
    return OutboundListener(name=name, listen=listen, connect_to=connect_to, expect=expect,
                            allow_non_loopback_listen=optout, limits=own, tls=own_settings, peer_expiry=expiry,
                            line=sec.line, protocol=protocol, http=http)


def _outbound_expiry(value: str) -> PeerExpiry:
    """``keep`` or ``close``: a TLS client cannot ask a server for its certificate again."""
    expiry = enum_choice(PeerExpiry)(value)
    if expiry is PeerExpiry.REAUTHENTICATE:
        raise ValueError("'reauthenticate' is for inbound listeners: a TLS client cannot ask the upstream for its"
                         " certificate again (the upstream's sidecar re-authenticates us instead); use 'keep' (the"
                         " upstream was verified at connect) or 'close' (close at its certificate's NotAfter)")
    return expiry  # type: ignore[no-any-return]


def own_limits(listener: Section, limits: Limits) -> Limits:
    """A listener's effective limits: its ``limits:`` overrides on top of the global ``limits``."""
    sec = listener.take_section("limits") or Section(CommentedMap(), listener.file, listener.field("limits"), None)
    return read_limits(Fields(sec, {}), limits)


def own_tls(listener: Section, tls: TlsSettings) -> TlsSettings:
    """A listener's effective TLS settings: its ``tls:`` overrides on top of the global ``tls``."""
    sec = listener.take_section("tls") or Section(CommentedMap(), listener.file, listener.field("tls"), None)
    return read_tls(Fields(sec, {}), tls)


def read_listeners(root: Section, limits: Limits, tls: TlsSettings = TlsSettings()) -> Listeners:
    """Read both lists; a name used twice (across both) is an error at the second one's line."""
    inbound = tuple(_items(root, "inbound", lambda sec: read_inbound(sec, limits, tls)))
    outbound = tuple(_items(root, "outbound", lambda sec: read_outbound(sec, limits, tls)))
    seen: dict[str, int | None] = {}
    both: list[tuple[str, int, InboundListener | OutboundListener]] = [
        *(("inbound", i, x) for i, x in enumerate(inbound)), *(("outbound", i, x) for i, x in enumerate(outbound))]
    for kind, index, listener in both:
        if listener.name in seen:
            raise ConfigError(root.file, listener.line, f"{kind}[{index}].name",
                              f"duplicate listener name {listener.name!r} (first at line {seen[listener.name]})")
        seen[listener.name] = listener.line
    return inbound, outbound


def _items(root: Section, key: str, reader: Callable[[Section], T]) -> list[T]:
    out: list[T] = []
    for i, item in enumerate(root.take_list(key)):
        if not isinstance(item, Section):
            raise ConfigError(root.file, root.item_line(key, i), f"{key}[{i}]",
                              f"expected a listener mapping, got {item!r}")
        out.append(reader(item))
    return out
