"""Read ``sidecar.yaml`` (plus environment overrides) into a SidecarConfig.

Strict like every loader here: an unknown key, a wrong type, a bad address
or pattern is a ConfigError naming file:line:field. Beyond one field:

- listener names are unique across inbound and outbound (logs, metrics) and
  not one the transparent listeners use;
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
``SPIFFE_SIDECAR_ADMIN_LISTEN=127.0.0.1:15000``,
``SPIFFE_SIDECAR_FIRST_SVID_TIMEOUT=10s``,
``SPIFFE_SIDECAR_TLS_SESSION_RESUMPTION=false``. A variable wins over the
file; errors in it are reported as ``$NAME: field: detail``. Listeners
(lists) are file-only. When ``identity`` is absent from both the file and
the variables, the standard ``SPIFFE_ENDPOINT_SOCKET`` names the Workload API.

This module assembles the whole file and checks what spans sections; the
parts have one job each: ``envfields`` (the variables), ``checks`` (value
checks), ``sections`` (identity, limits, admin, log), ``listeners``
(inbound/outbound lists), ``transparent`` (the transparent section),
``environment`` (spotting unknown ``SPIFFE_SIDECAR_*`` variables).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from proxy.config.checks import enum_choice, positive_duration, relative_to
from proxy.config.durations import parse_duration
from proxy.config.envfields import ENDPOINT_SOCKET_ENV, ENV_PREFIX, Fields, env_var_name
from proxy.config.listeners import own_limits, read_listeners
from proxy.config.model import FIRST_SVID_TIMEOUT, Limits, Runtime, SidecarConfig, TlsSettings
from proxy.config.sections import read_admin, read_identity, read_limits, read_log, read_tls
from proxy.config.transparent import read_transparent
from proxy.yamlfields import Section, load_yaml_file, load_yaml_text
from proxy.errors import ConfigError
from proxy.policy.evaluate import PolicySet
from proxy.policy.load import load_policy_file

__all__ = ["ENDPOINT_SOCKET_ENV", "ENV_PREFIX", "build_sidecar_config", "check_policy_references", "env_var_name",
           "load_sidecar", "load_sidecar_config", "load_sidecar_config_text"]


def build_sidecar_config(doc: Any, file: str, *, env: Mapping[str, str] | None = None,
                         base_dir: Path | None = None, check_policies: bool = True) -> SidecarConfig:
    """Validate a parsed sidecar.yaml document (see ``load_sidecar_config``)."""
    env = dict(os.environ) if env is None else env
    base = base_dir if base_dir is not None else Path(file).parent
    root = Section.root(doc, file)
    f = Fields(root, env)
    identity = read_identity(f.sub("identity"), env, base)
    runtime = f.take("runtime", str, default=Runtime.TRIO, check=enum_choice(Runtime))
    limits = read_limits(f.sub("limits"), Limits())
    tls = read_tls(f.sub("tls"), TlsSettings())
    inbound, outbound = read_listeners(root, limits, tls)
    tsec = root.take_section("transparent")
    config = SidecarConfig(
        file=file, identity=identity, runtime=runtime, inbound=inbound, outbound=outbound,
        transparent=read_transparent(tsec, lambda s: own_limits(s, limits)) if tsec else None,
        policy_file=f.take("policy_file", str, check=relative_to(base)), limits=limits, tls=tls,
        admin=read_admin(f.sub("admin")), log=read_log(f.sub("log")),
        drain_timeout=f.take("drain_timeout", (str, int, float), default=30.0, check=parse_duration),
        first_svid_timeout=f.take("first_svid_timeout", (str, int, float), default=FIRST_SVID_TIMEOUT,
                                  check=positive_duration),
    )
    root.finish()
    if config.policy_references() and config.policy_file is None:
        raise ConfigError(file, root.line_of("inbound"), "policy_file", "is required: inbound listeners name"
                          " policies from it")
    if check_policies and config.policy_file is not None:
        check_policy_references(config, _read_policies(config, root, env))
    return config


def _read_policies(config: SidecarConfig, root: Section, env: Mapping[str, str]) -> PolicySet:
    """The policy file; one that cannot be read is reported where it is named (line or variable)."""
    assert config.policy_file is not None
    try:
        return load_policy_file(config.policy_file)
    except ConfigError as exc:
        if exc.line is None and "cannot read" in exc.detail:  # point at the line that names the file
            variable = env_var_name("policy_file")
            if variable is not None and variable in env:
                raise ConfigError(f"${variable}", None, "policy_file",
                                  f"{exc.detail}: {config.policy_file}") from None
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
    env = dict(os.environ) if env is None else env
    doc, file = load_yaml_file(path)
    config = build_sidecar_config(doc, file, env=env, check_policies=False)
    if config.policy_file is None:
        return config, None
    policies = _read_policies(config, Section.root(doc, file), env)
    check_policy_references(config, policies)
    return config, policies
