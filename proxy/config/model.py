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
from proxy.errors import ConfigError
from proxy.identity.address import parse_address
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


class InboundMode(enum.Enum):
    """Transparent inbound: ``strict`` refuses plaintext, ``permissive`` passes it (migration)."""

    STRICT = "strict"
    PERMISSIVE = "permissive"


class Unmatched(enum.Enum):
    """Transparent outbound, for a destination with no route: refuse it, or pass it through in plaintext."""

    REFUSE = "refuse"
    PASSTHROUGH = "passthrough"


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPort:
    """A TCP address: an IP literal or a host name, and a port (1-65535).

    Attributes:
        host: IP literal (IPv6 without brackets) or DNS name.
        port: 1-65535.
    """

    host: str
    port: int

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, or None for a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8, ::1 and the name ``localhost``."""
        ip = self.ip
        return ip.is_loopback if ip is not None else self.host == "localhost"

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
class Limits:
    """Per-connection bounds; defaults are safe for a typical service.

    Attributes:
        handshake_timeout: seconds for a TLS handshake to complete.
        connect_timeout: seconds for an upstream TCP connect.
        idle_timeout: seconds without a byte either way before closing; None = never.
        max_connections: concurrent connections per listener; over it, new ones are refused.
        buffer_size: bytes buffered per direction per connection (backpressure beyond it).
        max_connection_lifetime: seconds; None = only the peer certificate's NotAfter bounds it
            (a connection is always closed at the earlier of the two).
    """

    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float | None = 300.0
    max_connections: int = 10000
    buffer_size: int = 64 * 1024
    max_connection_lifetime: float | None = None


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
        line: line of the listener in sidecar.yaml (for errors found later).
        policy_line: line of its ``policy`` field (a missing policy is reported there).
    """

    name: str
    listen: HostPort
    forward_to: HostPort
    policy: str
    allow_non_loopback_forward: bool = False
    limits: Limits = Limits()
    line: int | None = None
    policy_line: int | None = None


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
        line: line of the listener in sidecar.yaml.
    """

    name: str
    listen: HostPort
    connect_to: HostPort
    expect: PeerMatcher
    allow_non_loopback_listen: bool = False
    limits: Limits = Limits()
    line: int | None = None


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
                "inbound": [(i.name, i.listen, i.forward_to) for i in c.inbound],
                "outbound": [(o.name, o.listen, o.connect_to) for o in c.outbound],
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


_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")
_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_host_port(text: str, *, ip_only: bool = False) -> HostPort:
    """Parse ``host:port`` / ``[v6]:port``; ``ip_only`` also allows ``localhost`` (for binding).

    Raises:
        ValueError: naming the input and what is expected.
    """
    expect = "expected host:port, e.g. 127.0.0.1:8080 or [::1]:8080"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or ":" not in host:
            raise ValueError(f"invalid address {text!r}: {expect}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"invalid address {text!r}: {expect}")
        if ":" in host:
            raise ValueError(f"invalid address {text!r}: write an IPv6 address in brackets, e.g. [::1]:8443")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid address {text!r}: the port must be a number from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if ip_only and host != "localhost":
            raise ValueError(f"invalid address {text!r}: a listen address is an IP (0.0.0.0, 127.0.0.1, [::])"
                             " or localhost") from None
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"invalid address {text!r}: {host!r} is neither an IP address nor a host name"
                             ) from None
    return HostPort(host=host, port=int(port))


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
