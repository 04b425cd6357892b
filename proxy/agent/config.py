"""agent.yaml: the embedded agent's socket, trust domains (CAs) and entries.

Every mistake is reported at start-up with file:line:field, never at the
first request: a typo in a registration entry must not become a silent
"no SVID" for a workload an hour later.

    socket_path: /tmp/spiffe-sidecar/agent.sock
    socket_mode: "0777"
    x509_svid_ttl: 5m
    jwt_svid_ttl: 5m
    workload_size_limit: 67108864      # bytes hashed for unix:sha256; 0 = no limit, -1 = never
    state_dir: /var/lib/spiffe-sidecar # default; ~/.local/state/spiffe-sidecar when not root
    trust_domains:
      - name: example.org
        key_type: ec-p256              # or rsa-2048
        ca_ttl: 24h
        ca_dir: /srv/ca                # optional; default <state_dir>/ca; CA keys kept 0600
        ephemeral_ca: false            # true: keep the CA in memory only (a restart replaces it)
    entries:
      - spiffe_id: spiffe://example.org/backend
        selectors: [unix:uid:1000, "unix:path:/usr/local/bin/backend"]
        x509_svid_ttl: 10m
        dns_names: [backend.local]
        federates_with: [partner.test]
        hint: internal
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from proxy.agent.registry import Entry, Selector
from proxy.config.durations import parse_duration
from proxy.yamlfields import Section, load_yaml_file, load_yaml_text
from proxy.errors import ConfigError
from proxy.spiffe.id import SpiffeId, TrustDomain

#: Environment variable that overrides `socket_path` (one flag, one field, one env var).
SOCKET_ENV = "SPIFFE_SIDECAR_AGENT_SOCKET"
#: Environment variable that overrides `state_dir` (the --state-dir flag overrides both).
STATE_DIR_ENV = "SPIFFE_SIDECAR_AGENT_STATE_DIR"
DEFAULT_SOCKET = Path("/tmp/spiffe-sidecar/agent.sock")
KEY_TYPES = ("ec-p256", "rsa-2048")
_DNS = re.compile(r"(?=.{1,253}\Z)(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustDomainConfig:
    """One trust domain the agent is the CA of.

    ``ca_dir`` None: the CA lives in memory only, unless the agent's
    ``state_dir`` gives it a directory (``AgentConfig.ca_dir_for``).
    """

    trust_domain: TrustDomain
    key_type: str = "ec-p256"
    ca_ttl: float = 24 * 3600.0
    ca_dir: Path | None = None
    ephemeral_ca: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Everything `serve_agent` needs; build it with load_agent_config or agent_config().

    ``state_dir`` is where the CAs persist (``<state_dir>/ca/<trust domain>/``).
    agent.yaml defaults it to ``default_state_dir()``; built in code (tests, the
    demo) it defaults to None: an in-memory CA, which the agent warns about.
    """

    socket_path: Path = DEFAULT_SOCKET
    state_dir: Path | None = None
    socket_mode: int = 0o777
    x509_svid_ttl: float = 300.0
    jwt_svid_ttl: float = 300.0
    workload_size_limit: int = 64 * 1024 * 1024
    trust_domains: tuple[TrustDomainConfig, ...] = ()
    entries: tuple[Entry, ...] = ()
    source: str = "<code>"

    def ca_dir_for(self, td: TrustDomainConfig) -> Path | None:
        """Where a trust domain's CA persists; None: in memory only (restarting replaces it)."""
        if td.ephemeral_ca:
            return None
        if td.ca_dir is not None:
            return td.ca_dir
        return self.state_dir / "ca" if self.state_dir is not None else None

    def entry_x509_ttl(self, entry: Entry) -> float:
        return entry.x509_svid_ttl if entry.x509_svid_ttl is not None else self.x509_svid_ttl

    def entry_jwt_ttl(self, entry: Entry) -> float:
        return entry.jwt_svid_ttl if entry.jwt_svid_ttl is not None else self.jwt_svid_ttl


def _ttl(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds < 1:
        raise ValueError(f"invalid duration {value!r}: must be at least 1s")
    return seconds


def _mode(value: Any) -> int:
    # A string only: YAML reads 0777 as decimal 777 and 0o777 as 511, and
    # guessing which one an operator meant for a permission is not safe.
    text = str(value)
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise ValueError(f"invalid mode {value!r}: expected an octal string such as \"0777\" or \"0660\"")
    return int(text, 8)


def _dns(value: Any) -> str:
    if not isinstance(value, str) or not _DNS.match(value):
        raise ValueError(f"invalid DNS name {value!r}: expected lowercase labels such as backend.example.org")
    return value


def _read_trust_domain(sec: Section) -> TrustDomainConfig:
    td = sec.take("name", str, required=True, check=TrustDomain.parse)
    key_type = sec.take("key_type", str, default="ec-p256")
    if key_type not in KEY_TYPES:
        raise sec.error("key_type", f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")
    ca_ttl = sec.take("ca_ttl", (str, int, float), default=24 * 3600.0, check=_ttl)
    ca_dir = sec.take("ca_dir", str, check=lambda v: Path(v))
    ephemeral = sec.take("ephemeral_ca", bool, default=False)
    if ephemeral and ca_dir is not None:
        raise sec.error("ephemeral_ca", "an ephemeral CA is kept in memory only: remove ca_dir or ephemeral_ca")
    sec.finish()
    return TrustDomainConfig(trust_domain=td, key_type=key_type, ca_ttl=ca_ttl, ca_dir=ca_dir, ephemeral_ca=ephemeral)


def _read_strings(sec: Section, key: str, check: Any) -> list[Any]:
    out = []
    for i, item in enumerate(sec.take_list(key)):
        where = ConfigError(sec.file, sec.item_line(key, i), f"{sec.field(key)}[{i}]", "")
        if not isinstance(item, str):
            raise ConfigError(where.file, where.line, where.field, f"expected a string, got {item!r}")
        try:
            out.append(check(str(item)))
        except ValueError as exc:
            raise ConfigError(where.file, where.line, where.field, str(exc)) from None
    return out


def _read_entry(sec: Section, index: int, domains: dict[TrustDomain, TrustDomainConfig]) -> Entry:
    spiffe_id = sec.take("spiffe_id", str, required=True, check=SpiffeId.parse)
    if spiffe_id.is_root:
        raise sec.error("spiffe_id", f"{spiffe_id} has no path; a workload ID needs one (e.g. {spiffe_id}/app)")
    if spiffe_id.trust_domain not in domains:
        raise sec.error("spiffe_id", f"trust domain {spiffe_id.trust_domain} is not in trust_domains; "
                        f"configured: {', '.join(str(t) for t in domains) or 'none'}")
    selectors = _read_strings(sec, "selectors", Selector.parse)
    if not selectors:
        raise ConfigError(sec.file, sec.line_of("selectors"), sec.field("selectors"),
                          "at least one selector is required (an entry without selectors would match every caller)")
    federates = _read_strings(sec, "federates_with", TrustDomain.parse)
    for i, td in enumerate(federates):
        if td not in domains:
            raise ConfigError(sec.file, sec.item_line("federates_with", i), f"{sec.field('federates_with')}[{i}]",
                              f"trust domain {td} is not in trust_domains (this agent only has bundles for those)")
    entry = Entry(
        spiffe_id=spiffe_id, selectors=frozenset(selectors),
        x509_svid_ttl=sec.take("x509_svid_ttl", (str, int, float), check=_ttl),
        jwt_svid_ttl=sec.take("jwt_svid_ttl", (str, int, float), check=_ttl),
        dns_names=tuple(_read_strings(sec, "dns_names", _dns)),
        federates_with=tuple(federates), hint=sec.take("hint", str, default=""), index=index)
    if len(entry.hint.encode()) > 1024:
        raise sec.error("hint", "longer than 1024 bytes (the Workload API does not support longer hints)")
    sec.finish()
    return entry


def _read_root(root: Section) -> AgentConfig:
    socket_path = Path(root.take("socket_path", str, default=str(DEFAULT_SOCKET)))
    socket_mode = root.take("socket_mode", str, default=0o777, check=_mode)
    x509_ttl = root.take("x509_svid_ttl", (str, int, float), default=300.0, check=_ttl)
    jwt_ttl = root.take("jwt_svid_ttl", (str, int, float), default=300.0, check=_ttl)
    size_limit = root.take("workload_size_limit", int, default=64 * 1024 * 1024)
    state_dir = Path(root.take("state_dir", str, default=str(default_state_dir())))
    domains: dict[TrustDomain, TrustDomainConfig] = {}
    items = root.take_list("trust_domains", required=True)
    for i, item in enumerate(items):
        if not isinstance(item, Section):
            raise ConfigError(root.file, root.item_line("trust_domains", i), f"trust_domains[{i}]",
                              "expected a mapping with at least `name`")
        tdc = _read_trust_domain(item)
        if tdc.trust_domain in domains:
            raise item.error("name", f"trust domain {tdc.trust_domain} is listed twice")
        domains[tdc.trust_domain] = tdc
    if not domains:
        raise root.error("trust_domains", "at least one trust domain is required")
    entries = []
    for i, item in enumerate(root.take_list("entries")):
        if not isinstance(item, Section):
            raise ConfigError(root.file, root.item_line("entries", i), f"entries[{i}]",
                              "expected a mapping with spiffe_id and selectors")
        entries.append(_read_entry(item, i, domains))
    root.finish()
    return AgentConfig(socket_path=socket_path, state_dir=state_dir, socket_mode=socket_mode, x509_svid_ttl=x509_ttl,
                       jwt_svid_ttl=jwt_ttl, workload_size_limit=size_limit,
                       trust_domains=tuple(domains.values()), entries=tuple(entries), source=root.file)


def load_agent_config(path: str | Path, *, env: dict[str, str] | None = None) -> AgentConfig:
    """Read and check agent.yaml; SPIFFE_SIDECAR_AGENT_SOCKET overrides socket_path.

    Raises:
        ConfigError: with file:line:field of the first problem.
    """
    doc, file = load_yaml_file(path)
    config = _read_root(Section.root(doc, file))
    return _apply_env(config, os.environ if env is None else env)


def parse_agent_config(text: str, file: str = "<string>") -> AgentConfig:
    """Like load_agent_config, from text (tests, the demo's generated config)."""
    return _read_root(Section.root(load_yaml_text(text, file), file))


def _apply_env(config: AgentConfig, env: Any) -> AgentConfig:
    override = env.get(SOCKET_ENV)
    if override:
        config = with_socket(config, Path(override))
    state = env.get(STATE_DIR_ENV)
    if state:
        config = with_state_dir(config, Path(state))
    return config


def default_state_dir() -> Path:
    """/var/lib/spiffe-sidecar for root; else $XDG_STATE_HOME (or ~/.local/state)/spiffe-sidecar."""
    if os.geteuid() == 0:
        return Path("/var/lib/spiffe-sidecar")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "spiffe-sidecar"


def with_state_dir(config: AgentConfig, state_dir: Path) -> AgentConfig:
    """A copy of config keeping its CAs elsewhere (the --state-dir flag)."""
    from dataclasses import replace
    return replace(config, state_dir=state_dir)


def with_socket(config: AgentConfig, socket_path: Path) -> AgentConfig:
    """A copy of config listening elsewhere (the --socket flag)."""
    from dataclasses import replace
    return replace(config, socket_path=socket_path)


def agent_config(*, socket_path: str | Path, trust_domain: str = "example.org",
                 entries: Sequence[tuple[str, Sequence[str]] | dict[str, Any]] = (), **kwargs: Any) -> AgentConfig:
    """Programmatic constructor for tests and the demo.

    `entries` items are (spiffe_id, [selector, ...]) pairs or dicts with the
    YAML keys; `kwargs` sets other AgentConfig fields (x509_svid_ttl=4.0...).
    Extra trust domains: pass trust_domains=(TrustDomainConfig(...), ...).
    """
    domains = kwargs.pop("trust_domains", None) or (TrustDomainConfig(trust_domain=TrustDomain.parse(trust_domain)),)
    built = []
    for i, item in enumerate(entries):
        spec: dict[str, Any] = item if isinstance(item, dict) else {"spiffe_id": item[0], "selectors": item[1]}
        built.append(Entry(
            spiffe_id=SpiffeId.parse(spec["spiffe_id"]),
            selectors=frozenset(Selector.parse(s) for s in spec["selectors"]),
            x509_svid_ttl=spec.get("x509_svid_ttl"), jwt_svid_ttl=spec.get("jwt_svid_ttl"),
            dns_names=tuple(spec.get("dns_names", ())),
            federates_with=tuple(TrustDomain.parse(t) for t in spec.get("federates_with", ())),
            hint=spec.get("hint", ""), index=i))
    return AgentConfig(socket_path=Path(socket_path), trust_domains=tuple(domains), entries=tuple(built), **kwargs)
