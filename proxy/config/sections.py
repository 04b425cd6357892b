"""Readers of sidecar.yaml's single-mapping sections: ``identity``, ``limits``, ``admin``, ``log``.

Each takes a ``Fields`` (the section plus environment overrides), reads
every known key, and finishes the section, so an unknown key is a
``file:line:field`` error. Listeners (lists) are in ``proxy.config.listeners``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from proxy.config.checks import (address, enum_choice, int_range, optional_duration, path_like, positive_duration,
                                 relative_to)
from proxy.config.envfields import ENDPOINT_SOCKET_ENV, Fields, mark_read
from proxy.config.model import (AdminConfig, FilesSource, IdentityConfig, Limits, LogConfig, LogFormat, LogLevel,
                                TlsSettings, parse_size, parse_workload_api_address)
from proxy.errors import ConfigError


def read_limits(f: Fields, base: Limits) -> Limits:
    """Read a ``limits:`` section; unset fields keep ``base`` (global or default)."""
    def opt(key: str, current: float | None) -> float | None:
        if f.overridden(key) or f.section.has(key):
            value = f.take(key, (str, int, float), check=optional_duration)
            return value if isinstance(value, float) else None
        mark_read(f.section, key)
        return current

    limits = Limits(
        handshake_timeout=f.take("handshake_timeout", (str, int, float), default=base.handshake_timeout,
                                 check=positive_duration),
        connect_timeout=f.take("connect_timeout", (str, int, float), default=base.connect_timeout,
                               check=positive_duration),
        idle_timeout=opt("idle_timeout", base.idle_timeout),
        max_connections=f.take("max_connections", int, default=base.max_connections, check=int_range(1, 10_000_000)),
        buffer_size=f.take("buffer_size", (str, int), default=base.buffer_size,
                           check=lambda v: int_range(1024, 64 << 20)(parse_size(v))),
        max_connection_lifetime=opt("max_connection_lifetime", base.max_connection_lifetime),
        max_pending_handshakes=f.take("max_pending_handshakes", int, default=base.max_pending_handshakes,
                                      check=int_range(1, 10_000_000)),
        max_pending_handshakes_per_source=f.take("max_pending_handshakes_per_source", int,
                                                 default=base.max_pending_handshakes_per_source,
                                                 check=int_range(1, 10_000_000)),
    )
    f.section.finish()
    return limits


def read_tls(f: Fields, base: TlsSettings) -> TlsSettings:
    """Read a ``tls:`` section; unset fields keep ``base`` (global or default)."""
    tls = TlsSettings(session_resumption=bool(f.take("session_resumption", bool, default=base.session_resumption)))
    f.section.finish()
    return tls


def read_identity(f: Fields, env: Mapping[str, str], base_dir: Path) -> IdentityConfig:
    """Read ``identity:``: exactly one of ``workload_api`` and ``files``."""
    sec = f.section
    api = f.take("workload_api", str, check=parse_workload_api_address)
    wanted = f.take("spiffe_id", str, check=_spiffe_id)
    files: FilesSource | None = None
    ff = f.sub("files")
    if ff.section.data or any(ff.overridden(k) for k in ("cert", "key", "bundle")):
        if api is not None:
            raise sec.error("files", "set either workload_api or files, not both")
        if wanted is not None:
            raise sec.error("spiffe_id", "chooses among the Workload API's SVIDs: files hold exactly one")
        files = _files(ff, base_dir)
    sec.finish()
    if api is not None or files is not None:
        return IdentityConfig(workload_api=api, files=files, spiffe_id=wanted)
    socket = env.get(ENDPOINT_SOCKET_ENV)
    if not socket:
        raise ConfigError(sec.file, sec.line, sec.path or "identity",
                          "no SVID source: set identity.workload_api, identity.files, or the"
                          f" {ENDPOINT_SOCKET_ENV} environment variable")
    try:
        return IdentityConfig(workload_api=parse_workload_api_address(socket), from_env=True, spiffe_id=wanted)
    except ValueError as exc:
        raise ConfigError(f"${ENDPOINT_SOCKET_ENV}", None, "", str(exc)) from None


def _spiffe_id(value: str) -> str:
    from proxy.spiffe.id import SpiffeId

    return str(SpiffeId.parse(value))


def _files(f: Fields, base_dir: Path) -> FilesSource:
    path = relative_to(base_dir)
    cert = f.take("cert", str, required=True, check=path)
    key = f.take("key", str, required=True, check=path)
    bundle = f.take("bundle", str, required=True, check=path)
    federated: dict[str, Path] = {}
    fed = f.section.take_section("federated_bundles")
    if fed is not None:
        from proxy.policy.match import PatternError, compile_trust_domain
        for name in list(fed.keys()):
            try:
                compile_trust_domain(str(name))
            except PatternError as exc:
                raise fed.error(str(name), str(exc)) from None
            federated[str(name)] = fed.take(str(name), str, required=True, check=path)
    f.section.finish()
    return FilesSource(cert=cert, key=key, bundle=bundle, federated_bundles=federated)


def read_admin(f: Fields) -> AdminConfig | None:
    """Read ``admin:`` (absent and no variable: no admin endpoint)."""
    listen = f.take("listen", str, check=address(ip_only=True))
    if listen is None:
        f.section.finish()
        return None
    optout = bool(f.take("allow_non_loopback", bool, default=False))
    if not listen.is_loopback and not optout:
        raise f.section.error("listen", f"{listen} is not a loopback address: the admin endpoint stays on"
                              " this host unless allow_non_loopback: true is set")
    peer_labels = bool(f.take("peer_id_labels", bool, default=False))
    f.section.finish()
    return AdminConfig(listen=listen, allow_non_loopback=optout, peer_id_labels=peer_labels)


def read_log(f: Fields) -> LogConfig:
    """Read ``log:``."""
    log = LogConfig(
        level=f.take("level", str, default=LogLevel.INFO, check=enum_choice(LogLevel)),
        access=f.take("access", str, default="stdout", check=path_like),
        format=f.take("format", str, default=LogFormat.AUTO, check=enum_choice(LogFormat)),
    )
    f.section.finish()
    return log
