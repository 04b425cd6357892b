"""Read ``sidecar.yaml`` (plus environment overrides) into a SidecarConfig.

Strict like every loader here: an unknown key, a wrong type, a bad address
or pattern is a ConfigError naming file:line:field. Beyond one field:

- listener names are unique across inbound and outbound (logs, metrics);
- ``forward_to`` (inbound) and ``listen`` (outbound) and ``admin.listen`` are
  loopback unless explicitly opted out (``allow_non_loopback_forward``,
  ``allow_non_loopback_listen``, ``allow_non_loopback``), like ghostunnel's
  ``--unsafe-target``/``--unsafe-listen``: plaintext stays on the host;
- every policy an inbound listener names exists in ``policy_file`` (loaded
  and validated too; the error points at the sidecar.yaml line);
- relative paths (``policy_file``, identity files) are relative to the
  directory of the config file, not the working directory.

Environment overrides. Every scalar field outside a list maps to one
variable: ``SPIFFE_SIDECAR_`` + the field path upper-cased with ``.`` as
``_``. Examples: ``SPIFFE_SIDECAR_RUNTIME=uvloop``,
``SPIFFE_SIDECAR_IDENTITY_WORKLOAD_API=unix:///run/spire/agent.sock``,
``SPIFFE_SIDECAR_POLICY_FILE=/etc/sidecar/policy.yaml``,
``SPIFFE_SIDECAR_LOG_LEVEL=debug``, ``SPIFFE_SIDECAR_LIMITS_IDLE_TIMEOUT=1m``,
``SPIFFE_SIDECAR_ADMIN_LISTEN=127.0.0.1:15000``. A variable wins over the
file; errors in it are reported as ``$NAME: field: detail``. Listeners
(lists) are file-only. When ``identity`` is absent from both the file and
the variables, the standard ``SPIFFE_ENDPOINT_SOCKET`` names the Workload API.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from ruamel.yaml.comments import CommentedMap

from proxy.config.durations import parse_duration
from proxy.config.transparent import read_transparent
from proxy.config.model import (AdminConfig, FilesSource, HostPort, IdentityConfig, InboundListener, Limits,
                                LogConfig, LogFormat, LogLevel, OutboundListener, Runtime, SidecarConfig,
                                parse_host_port, parse_size, parse_workload_api_address)
from proxy.config.yamlfields import Section, load_yaml_file, load_yaml_text
from proxy.errors import ConfigError
from proxy.policy.evaluate import PolicySet
from proxy.policy.load import NAME_RE, load_policy_file, read_peer_patterns

T = TypeVar("T")
ENV_PREFIX = "SPIFFE_SIDECAR_"
ENDPOINT_SOCKET_ENV = "SPIFFE_ENDPOINT_SOCKET"


def env_var_name(field: str) -> str | None:
    """The environment variable of a field path (None for fields inside lists)."""
    if "[" in field:
        return None
    return ENV_PREFIX + field.replace(".", "_").upper()


def _env_value(text: str, kind: Any) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if bool in kinds and text.lower() in ("true", "false", "1", "0", "yes", "no"):
        return text.lower() in ("true", "1", "yes")
    if int in kinds and re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.lower() in ("", "null", "none"):
        return None
    return text


class Fields:
    """A Section read with environment overrides (see the module docstring)."""

    def __init__(self, section: Section, env: Mapping[str, str]) -> None:
        self.section = section
        self.env = env

    def sub(self, key: str) -> Fields:
        """A nested section; an absent one reads as empty so variables still apply."""
        sec = self.section.take_section(key)
        if sec is None:
            sec = Section(CommentedMap(), self.section.file, self.section.field(key), None)
        return Fields(sec, self.env)

    def overridden(self, key: str) -> bool:
        """True when a variable sets ``key``."""
        name = env_var_name(self.section.field(key))
        return name is not None and name in self.env

    def take(self, key: str, kind: Any, **kw: Any) -> Any:
        """Read ``key`` from the variable if set, else from the file."""
        name = env_var_name(self.section.field(key))
        if name is None or name not in self.env:
            return self.section.take(key, kind, **kw)
        _mark_read(self.section, key)  # the variable replaces the file's value
        value = _env_value(self.env[name], kind)
        return Section({key: value}, f"${name}", self.section.path, None).take(key, kind, **kw)


def _mark_read(section: Section, key: str) -> None:
    # Section has no public "skip" and take() would type-check a value we discard.
    section._seen.add(key)


def _enum(kind: Any) -> Callable[[str], Any]:
    def check(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"expected one of {', '.join(m.value for m in kind)}, got {value!r}") from None
    return check


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than 0, got {value!r}")
    return seconds


def _optional_duration(value: Any) -> float | None:
    seconds = parse_duration(value)
    return seconds if seconds > 0 else None


def _range(low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value
    return check


def read_limits(f: Fields, base: Limits) -> Limits:
    """Read a ``limits:`` section; unset fields keep ``base`` (global or default)."""
    def opt(key: str, current: float | None) -> float | None:
        if f.overridden(key) or f.section.has(key):
            value = f.take(key, (str, int, float), check=_optional_duration)
            return value if isinstance(value, float) else None
        _mark_read(f.section, key)
        return current

    limits = Limits(
        handshake_timeout=f.take("handshake_timeout", (str, int, float), default=base.handshake_timeout,
                                 check=_positive_duration),
        connect_timeout=f.take("connect_timeout", (str, int, float), default=base.connect_timeout,
                               check=_positive_duration),
        idle_timeout=opt("idle_timeout", base.idle_timeout),
        max_connections=f.take("max_connections", int, default=base.max_connections, check=_range(1, 10_000_000)),
        buffer_size=f.take("buffer_size", (str, int), default=base.buffer_size,
                           check=lambda v: _range(1024, 64 << 20)(parse_size(v))),
        max_connection_lifetime=opt("max_connection_lifetime", base.max_connection_lifetime),
    )
    f.section.finish()
    return limits


def _address(*, ip_only: bool = False) -> Callable[[str], HostPort]:
    return lambda text: parse_host_port(text, ip_only=ip_only)


def _check_path_like(text: str) -> str:
    if not text:
        raise ValueError("expected a file path (or stdout, stderr, off for log.access), got an empty string")
    return text


def _path(base_dir: Path) -> Callable[[str], Path]:
    def check(text: str) -> Path:
        p = Path(_check_path_like(text)).expanduser()
        return p if p.is_absolute() else base_dir / p
    return check


def read_identity(f: Fields, env: Mapping[str, str], base_dir: Path) -> IdentityConfig:
    """Read ``identity:``: exactly one of ``workload_api`` and ``files``."""
    sec = f.section
    api = f.take("workload_api", str, check=parse_workload_api_address)
    files: FilesSource | None = None
    ff = f.sub("files")
    if ff.section.data or any(ff.overridden(k) for k in ("cert", "key", "bundle")):
        if api is not None:
            raise sec.error("files", "set either workload_api or files, not both")
        files = _files(ff, base_dir)
    sec.finish()
    if api is not None or files is not None:
        return IdentityConfig(workload_api=api, files=files)
    socket = env.get(ENDPOINT_SOCKET_ENV)
    if not socket:
        raise ConfigError(sec.file, sec.line, sec.path or "identity",
                          "no SVID source: set identity.workload_api, identity.files, or the"
                          f" {ENDPOINT_SOCKET_ENV} environment variable")
    try:
        return IdentityConfig(workload_api=parse_workload_api_address(socket), from_env=True)
    except ValueError as exc:
        raise ConfigError(f"${ENDPOINT_SOCKET_ENV}", None, "", str(exc)) from None


def _files(f: Fields, base_dir: Path) -> FilesSource:
    path = _path(base_dir)
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


def _check_listener_name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"invalid listener name {value!r}: 1-128 characters from letters, digits, '.', '_', '-'")
    return value


def _loopback_only(sec: Section, key: str, addr: HostPort, opt_out: str, what: str) -> None:
    if not addr.is_loopback and not sec.take(opt_out, bool, default=False):
        raise sec.error(key, f"{addr} is not a loopback address: {what} stays on this host unless"
                        f" {opt_out}: true is set")


def read_inbound(sec: Section, limits: Limits) -> InboundListener:
    """Read one ``inbound[]`` item."""
    name = sec.take("name", str, required=True, check=_check_listener_name)
    listen = sec.take("listen", str, required=True, check=_address(ip_only=True))
    forward_to = sec.take("forward_to", str, required=True, check=_address())
    _loopback_only(sec, "forward_to", forward_to, "allow_non_loopback_forward", "plaintext to the app")
    optout = bool(sec.take("allow_non_loopback_forward", bool, default=False))
    policy = sec.take("policy", str, required=True)
    own = _own_limits(sec, limits)
    sec.finish()
    return InboundListener(name=name, listen=listen, forward_to=forward_to, policy=policy,
                           allow_non_loopback_forward=optout, limits=own, line=sec.line)


def read_outbound(sec: Section, limits: Limits) -> OutboundListener:
    """Read one ``outbound[]`` item."""
    name = sec.take("name", str, required=True, check=_check_listener_name)
    listen = sec.take("listen", str, required=True, check=_address(ip_only=True))
    _loopback_only(sec, "listen", listen, "allow_non_loopback_listen", "plaintext from the app")
    optout = bool(sec.take("allow_non_loopback_listen", bool, default=False))
    connect_to = sec.take("connect_to", str, required=True, check=_address())
    if not sec.has("expect"):
        raise ConfigError(sec.file, sec.line, sec.field("expect"),
                          "is required: the SPIFFE ID (pattern) the upstream must present")
    expect = read_peer_patterns(sec, "expect", single_ok=True)
    own = _own_limits(sec, limits)
    sec.finish()
    return OutboundListener(name=name, listen=listen, connect_to=connect_to, expect=expect,
                            allow_non_loopback_listen=optout, limits=own, line=sec.line)


def _own_limits(listener: Section, limits: Limits) -> Limits:
    sec = listener.take_section("limits") or Section(CommentedMap(), listener.file, listener.field("limits"), None)
    return read_limits(Fields(sec, {}), limits)


def read_admin(f: Fields) -> AdminConfig | None:
    """Read ``admin:`` (absent and no variable: no admin endpoint)."""
    listen = f.take("listen", str, check=_address(ip_only=True))
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
        level=f.take("level", str, default=LogLevel.INFO, check=_enum(LogLevel)),
        access=f.take("access", str, default="stdout", check=_check_path_like),
        format=f.take("format", str, default=LogFormat.AUTO, check=_enum(LogFormat)),
    )
    f.section.finish()
    return log


def _listeners(root: Section, limits: Limits) -> tuple[tuple[InboundListener, ...], tuple[OutboundListener, ...]]:
    inbound = tuple(_items(root, "inbound", lambda sec: read_inbound(sec, limits)))
    outbound = tuple(_items(root, "outbound", lambda sec: read_outbound(sec, limits)))
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


def build_sidecar_config(doc: Any, file: str, *, env: Mapping[str, str] | None = None,
                         base_dir: Path | None = None, check_policies: bool = True) -> SidecarConfig:
    """Validate a parsed sidecar.yaml document (see ``load_sidecar_config``)."""
    env = dict(os.environ) if env is None else env
    base = base_dir if base_dir is not None else Path(file).parent
    root = Section.root(doc, file)
    f = Fields(root, env)
    identity = read_identity(f.sub("identity"), env, base)
    runtime = f.take("runtime", str, default=Runtime.TRIO, check=_enum(Runtime))
    limits = read_limits(f.sub("limits"), Limits())
    inbound, outbound = _listeners(root, limits)
    tsec = root.take_section("transparent")
    config = SidecarConfig(
        file=file, identity=identity, runtime=runtime, inbound=inbound, outbound=outbound,
        transparent=read_transparent(tsec, lambda s: _own_limits(s, limits)) if tsec else None, policy_file=f.take("policy_file", str, check=_path(base)), limits=limits,
        admin=read_admin(f.sub("admin")), log=read_log(f.sub("log")),
        drain_timeout=f.take("drain_timeout", (str, int, float), default=30.0, check=parse_duration),
    )
    root.finish()
    if config.policy_references() and config.policy_file is None:
        raise ConfigError(file, root.line_of("inbound"), "policy_file", "is required: inbound listeners name"
                          " policies from it")
    if check_policies and config.policy_file is not None:
        check_policy_references(config, _read_policies(config, root))
    return config


def _read_policies(config: SidecarConfig, root: Section) -> PolicySet:
    assert config.policy_file is not None
    try:
        return load_policy_file(config.policy_file)
    except ConfigError as exc:
        if exc.line is None and "cannot read" in exc.detail:  # point at the line that names the file
            raise root.error("policy_file", f"{exc.detail}: {config.policy_file}") from None
        raise


def check_policy_references(config: SidecarConfig, policies: PolicySet) -> None:
    """Every policy an inbound listener names must exist in ``policies``.

    Run at load and before a policy reload is swapped in (a reload that drops
    a referenced policy is rejected, the running one stays).

    Raises:
        ConfigError: pointing at the sidecar.yaml line of the listener.
    """
    for name, field, line in config.policy_references():
        if name not in policies:
            known = ", ".join(repr(n) for n in policies.names()) or "none"
            raise ConfigError(config.file, line, field, f"no policy {name!r} in {policies.file} (it defines: {known})")


def load_sidecar_config(path: str | Path, *, env: Mapping[str, str] | None = None,
                        check_policies: bool = True) -> SidecarConfig:
    """Load and validate ``sidecar.yaml`` (and, by default, the policy file it names).

    Args:
        path: the config file.
        env: environment for overrides (default: ``os.environ``).
        check_policies: also load the policy file and check listener references.

    Raises:
        ConfigError: with file:line:field (``$VAR`` for an environment variable).
    """
    doc, file = load_yaml_file(path)
    return build_sidecar_config(doc, file, env=env, check_policies=check_policies)


def load_sidecar_config_text(text: str, file: str = "<string>", *, env: Mapping[str, str] | None = None,
                             base_dir: Path | None = None, check_policies: bool = True) -> SidecarConfig:
    """Like ``load_sidecar_config`` for YAML text; relative paths resolve from ``base_dir``
    (default: the directory of ``file``)."""
    return build_sidecar_config(load_yaml_text(text, file), file, env=env, base_dir=base_dir,
                                check_policies=check_policies)


def load_sidecar(path: str | Path, *, env: Mapping[str, str] | None = None) -> tuple[SidecarConfig, PolicySet | None]:
    """Load the config and its policy file once, checked against each other."""
    config = load_sidecar_config(path, env=env, check_policies=False)
    if config.policy_file is None:
        return config, None
    policies = load_policy_file(config.policy_file)
    check_policy_references(config, policies)
    return config, policies
