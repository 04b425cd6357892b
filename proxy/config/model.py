"""The sidecar's configuration as frozen dataclasses, one per concern.

``proxy.config.load`` builds these from ``sidecar.yaml`` (plus environment
overrides); everything downstream receives them already validated, so the
data plane never re-checks an address or a pattern. Immutable, so a reload
builds a new object and swaps one reference.

Durations are float seconds; sizes are int bytes; ``None`` means "no limit"
where a field says so.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from proxy.config.durations import format_duration
from proxy.config.values import HostPort as HostPort
from proxy.config.values import InboundMode as InboundMode
from proxy.config.values import Limits as Limits
from proxy.config.values import Unmatched as Unmatched
from proxy.config.values import parse_host_port as parse_host_port
from proxy.errors import ConfigError
from proxy.identity.address import parse_address
from proxy.config.values import PeerExpiry
from proxy.http.settings import HttpSettings, Protocol
from proxy.policy.match import PeerMatcher

if TYPE_CHECKING:
    from proxy.config.transparent import TransparentConfig

#: Default seconds start-up waits for the first X.509-SVID before giving up (listeners refuse meanwhile).
FIRST_SVID_TIMEOUT = 30.0


class Runtime(enum.Enum):
    """Which event loop drives the data path."""

    TRIO = "trio"
    UVLOOP = "uvloop"


class LogFormat(enum.Enum):
    """Access/diagnostic log format; ``auto`` = text on a terminal, JSON otherwise."""

    JSON = "json"
    TEXT = "text"
    AUTO = "auto"


class LogLevel(enum.Enum):
    """Diagnostic log level."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesSource:
    """SVID and bundles from PEM files (re-read on reload), instead of the Workload API.

    Attributes:
        cert: the X.509-SVID chain (leaf first).
        key: its PKCS#8 private key.
        bundle: the trust bundle of our own trust domain.
        federated_bundles: trust domain name -> bundle file, for federation.
    """

    cert: Path
    key: Path
    bundle: Path
    federated_bundles: Mapping[str, Path] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityConfig:
    """Where our X.509-SVID and the trust bundles come from: exactly one source.

    Attributes:
        workload_api: the Workload API address (``unix:///path`` or ``tcp://IP:port``), or None.
        files: the file source, or None.
        from_env: True when the address came from ``SPIFFE_ENDPOINT_SOCKET``.
        spiffe_id: which of the Workload API's X.509-SVIDs to present (None: its first, the
            default); an update without it withdraws our identity rather than fall back.
    """

    workload_api: str | None = None
    files: FilesSource | None = None
    from_env: bool = False
    spiffe_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """TLS behaviour of a listener (``tls:``, globally and per listener).

    Attributes:
        session_resumption: resume TLS sessions (inbound: accept resumed
            sessions; outbound: offer cached ones). False forces a full
            handshake on every connection (e.g. for full-handshake benchmark figures).
    """

    session_resumption: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundListener:
    """Terminate mTLS on ``listen``, authorize the peer by ``policy``, forward plaintext.

    Attributes:
        name: unique among all listeners; a log field and metric label.
        listen: where peers connect.
        forward_to: the app (loopback unless ``allow_non_loopback_forward``).
        policy: the policy name in the policy file.
        allow_non_loopback_forward: opt-in to forward plaintext off the host.
        limits: the effective limits (global ones with this listener's overrides).
        tls: the effective TLS settings (global ones with this listener's overrides).
        peer_expiry: at the peer certificate's NotAfter: re-authenticate it on the
            same connection (TLS 1.3 post-handshake auth), close, or keep.
        line: line of the listener in sidecar.yaml (for errors found later).
        policy_line: line of its ``policy`` field (a missing policy is reported there).
        protocol: tcp (bytes, the L4 path) or http (per-request policy).
        http: the HTTP layer's settings (protocol http only).
    """

    name: str
    listen: HostPort
    forward_to: HostPort
    policy: str
    allow_non_loopback_forward: bool = False
    limits: Limits = Limits()
    tls: TlsSettings = TlsSettings()
    peer_expiry: PeerExpiry = PeerExpiry.REAUTHENTICATE
    line: int | None = None
    policy_line: int | None = None
    protocol: Protocol = Protocol.TCP
    http: HttpSettings | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundListener:
    """Accept the app's plaintext on ``listen``, originate mTLS to ``connect_to``.

    Attributes:
        name: unique among all listeners.
        listen: where the app connects (loopback unless ``allow_non_loopback_listen``).
        connect_to: the upstream (its SPIFFE ID, not its host name, is verified).
        expect: the upstream's SPIFFE ID must match (``expect.matches(peer_id)``).
        allow_non_loopback_listen: opt-in to accept plaintext from off the host.
        limits: the effective limits.
        tls: the effective TLS settings.
        peer_expiry: at the upstream certificate's NotAfter: keep (its identity was
            verified at connect; a TLS client cannot ask again) or close.
        line: line of the listener in sidecar.yaml.
        protocol: tcp (bytes) or http (requests over pooled mTLS connections).
        http: the HTTP layer's settings (protocol http only).
    """

    name: str
    listen: HostPort
    connect_to: HostPort
    expect: PeerMatcher
    allow_non_loopback_listen: bool = False
    limits: Limits = Limits()
    tls: TlsSettings = TlsSettings()
    peer_expiry: PeerExpiry = PeerExpiry.KEEP
    line: int | None = None
    protocol: Protocol = Protocol.TCP
    http: HttpSettings | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    """The admin HTTP endpoint (/live, /ready, /metrics, /config...).

    Attributes:
        listen: loopback unless ``allow_non_loopback``.
        allow_non_loopback: opt-in to expose it off the host.
        peer_id_labels: opt-in to a per-peer-ID decisions metric (unbounded labels: small meshes only).
    """

    listen: HostPort
    allow_non_loopback: bool = False
    peer_id_labels: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """Logging.

    Attributes:
        level: diagnostic log level.
        access: ``stdout``, ``stderr``, ``off``, or a file path (one line per connection).
        format: json, text, or auto.
    """

    level: LogLevel = LogLevel.INFO
    access: str = "stdout"
    format: LogFormat = LogFormat.AUTO


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarConfig:
    """The whole sidecar configuration.

    Attributes:
        file: the config file it came from.
        identity: SVID source.
        runtime: trio (default) or uvloop.
        inbound / outbound: explicit listeners.
        transparent: iptables-fed listeners (``proxy.config.transparent``), or None.
        policy_file: resolved path of the policy file, or None when there are no inbound listeners.
        limits: global limits (each listener holds its effective copy).
        tls: global TLS settings (each explicit listener holds its effective copy; transparent
            listeners use these).
        admin: the admin endpoint, or None.
        log: logging.
        drain_timeout: seconds to let connections finish on SIGTERM.
        first_svid_timeout: seconds start-up waits for the first X.509-SVID before exiting 1
            (read once at start; listeners refuse connections meanwhile).
    """

    file: str
    identity: IdentityConfig
    runtime: Runtime = Runtime.TRIO
    inbound: tuple[InboundListener, ...] = ()
    outbound: tuple[OutboundListener, ...] = ()
    transparent: TransparentConfig | None = None
    policy_file: Path | None = None
    limits: Limits = Limits()
    tls: TlsSettings = TlsSettings()
    admin: AdminConfig | None = None
    log: LogConfig = LogConfig()
    drain_timeout: float = 30.0
    first_svid_timeout: float = FIRST_SVID_TIMEOUT

    def policy_references(self) -> list[tuple[str, str, int | None]]:
        """(policy name, referring field, sidecar.yaml line) for every policy a listener names."""
        refs = [(i.policy, f"inbound[{n}].policy", i.policy_line or i.line) for n, i in enumerate(self.inbound)]
        if self.transparent is not None and self.transparent.inbound is not None:
            refs += [(p.policy, f"transparent.inbound.ports[{n}].policy", p.line)
                     for n, p in enumerate(self.transparent.inbound.ports)]
        return refs

    def restart_required(self, new: SidecarConfig) -> tuple[str, ...]:
        """Fields that differ in ``new`` and cannot be applied by a live reload.

        Reloadable without a restart: the policy file's content, ``log.level``,
        per-listener ``limits`` (new connections), outbound ``expect``, inbound
        ``policy`` names of explicit listeners, ``drain_timeout`` (read when a
        drain begins). Not reloadable: what is bound,
        dialled or built at start (identity source, runtime, listener set and
        addresses, admin, the access log sink ``log.access``/``log.format``, the
        data plane's ``limits.buffer_size``, ``first_svid_timeout`` (only start-up waits),
        and the whole ``transparent`` section: its listeners capture their ports, routes, expect, unmatched and limits once).
        An empty tuple means ``new`` can be swapped in.
        """
        def shape(c: SidecarConfig) -> dict[str, Any]:
            return {
                "identity": c.identity, "runtime": c.runtime, "admin": c.admin, "policy_file": c.policy_file,
                "inbound": [(i.name, i.listen, i.forward_to, i.protocol) for i in c.inbound],
                "outbound": [(o.name, o.listen, o.connect_to, o.protocol) for o in c.outbound],
                "transparent": _plain(c.transparent),  # any change: see above
                "log.access": c.log.access, "log.format": c.log.format,
                "limits.buffer_size": c.limits.buffer_size,
                "first_svid_timeout": c.first_svid_timeout,
            }
        old_shape, new_shape = shape(self), shape(new)
        return tuple(k for k in old_shape if old_shape[k] != new_shape[k])

    def redacted(self) -> dict[str, Any]:
        """The effective config as JSON-ready data, for the admin /config endpoint.

        No key material lives in the config (only file paths, which are
        shown); durations are rendered like the YAML ("5m"), patterns as written.
        """
        out = _plain(self)
        assert isinstance(out, dict)
        return out


_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_size(value: str | int) -> int:
    """Bytes from ``65536``, ``"64KiB"``, ``"1MiB"``, ``"1MB"``.

    Raises:
        ValueError: naming the input.
    """
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"invalid size {value!r}: expected bytes or e.g. 64KiB, 1MiB")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def parse_workload_api_address(text: str) -> str:
    """Validate a Workload API address with the one parser (proxy.identity.address); the canonical form.

    Raises:
        ValueError: naming the input and the rule (the caller adds file, line and field).
    """
    try:
        return str(parse_address(text))
    except ConfigError as exc:
        raise ValueError(exc.detail) from None


def _plain(value: Any) -> Any:
    if isinstance(value, (HostPort, Path, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    if isinstance(value, frozenset):
        return sorted(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, PeerMatcher):
            return list(value.patterns)
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in ("line", "by_port")}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        return format_duration(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
