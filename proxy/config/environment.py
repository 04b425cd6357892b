"""Which ``SPIFFE_SIDECAR_*`` environment variables exist, and which in an environment do not.

A mistyped variable (``RUNTIM`` for ``RUNTIME``) would otherwise be
ignored without a word and the sidecar would run with the file's value:
``spiffe-sidecar run`` warns about every ``SPIFFE_SIDECAR_`` name it does not
know, with the closest known one and the full list.

The known names are the config fields' overrides (``CONFIG_FIELDS``, one
variable each, see ``proxy.config.envfields``) and the few variables read
outside the config (``OTHER_VARIABLES``). A test scans ``proxy/`` for
``SPIFFE_SIDECAR_`` names so a variable added elsewhere is added here too.
"""

from __future__ import annotations

import difflib
from typing import Mapping

from proxy.config.envfields import ENV_PREFIX, env_var_name

#: Every scalar field of sidecar.yaml that a variable overrides (the loader reads exactly these).
CONFIG_FIELDS = (
    "identity.workload_api", "identity.spiffe_id",
    "identity.files.cert", "identity.files.key", "identity.files.bundle",
    "runtime", "policy_file", "drain_timeout", "first_svid_timeout",
    "limits.handshake_timeout", "limits.connect_timeout", "limits.idle_timeout", "limits.max_connections",
    "limits.buffer_size", "limits.max_connection_lifetime", "limits.max_pending_handshakes",
    "limits.max_pending_handshakes_per_source",
    "tls.session_resumption",
    "admin.listen", "admin.allow_non_loopback", "admin.peer_id_labels",
    "log.level", "log.access", "log.format",
)

#: Variables read outside sidecar.yaml, with who reads them.
OTHER_VARIABLES = {
    "SPIFFE_SIDECAR_CONFIG": "run: the config file when -c is not given",
    "SPIFFE_SIDECAR_NO_EXTENSIONS": "use the pure-Python TLS engine",
    "SPIFFE_SIDECAR_REQUIRE_EXTENSIONS": "fail rather than fall back when the compiled engine is missing",
    "SPIFFE_SIDECAR_RELAY_THREAD": "the runtime's relay thread setting",
    "SPIFFE_SIDECAR_AGENT_SOCKET": "agent: socket_path",
    "SPIFFE_SIDECAR_AGENT_STATE_DIR": "agent: state_dir (where the CAs persist)",
}

#: Families of variables of other subcommands that may share a pod's environment (flags of `iptables`).
OTHER_PREFIXES = ("SPIFFE_SIDECAR_IPTABLES_",)


def known_variables() -> tuple[str, ...]:
    """Every known ``SPIFFE_SIDECAR_*`` name, sorted."""
    names = {env_var_name(f) for f in CONFIG_FIELDS} | set(OTHER_VARIABLES)
    return tuple(sorted(n for n in names if n is not None))


def unknown_variables(env: Mapping[str, str]) -> tuple[str, ...]:
    """The ``SPIFFE_SIDECAR_*`` names in ``env`` that nothing reads, sorted."""
    known = set(known_variables())
    return tuple(sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known
                        and not name.startswith(OTHER_PREFIXES)))


def unknown_variable_warnings(env: Mapping[str, str]) -> list[str]:
    """One warning per unknown variable: its name, the closest known name, and every known one."""
    known = known_variables()
    listing = ", ".join(known) + ", " + ", ".join(p + "*" for p in OTHER_PREFIXES)
    out = []
    for name in unknown_variables(env):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"unknown environment variable {name} is ignored{hint}; known variables: {listing}")
    return out
