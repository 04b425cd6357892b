"""The list of known SPIFFE_SIDECAR_* variables stays true to the code that reads them."""

from __future__ import annotations

import re
from pathlib import Path

import proxy
from proxy.config.environment import (CONFIG_FIELDS, OTHER_PREFIXES, known_variables, unknown_variable_warnings,
                                      unknown_variables)
from proxy.config.envfields import ENV_PREFIX, env_var_name
from proxy.config.load import load_sidecar_config_text

PACKAGE = Path(proxy.__file__).resolve().parent
NAME = re.compile(r"SPIFFE_SIDECAR_[A-Z0-9_]*")


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers every name the loader asks it about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def __contains__(self, name: object) -> bool:
        self.asked.add(str(name))
        return super().__contains__(name)

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(name)
        return super().get(name, default)


def test_the_loader_consults_exactly_the_listed_config_variables() -> None:
    env = RecordingEnv()
    load_sidecar_config_text("identity: {workload_api: unix:///run/agent.sock}\nadmin: {listen: 127.0.0.1:15000}\n",
                             "/etc/sidecar.yaml", env=env, check_policies=False)
    assert {n for n in env.asked if n.startswith(ENV_PREFIX)} == {env_var_name(f) for f in CONFIG_FIELDS}


def test_every_variable_named_in_the_package_is_known() -> None:
    known = set(known_variables())
    unknown = set()
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyx"), *PACKAGE.rglob("*.pxi")]:
        for name in NAME.findall(path.read_text(encoding="utf-8")):
            if name.endswith("_") and (any(k.startswith(name) for k in known) or name in OTHER_PREFIXES):
                continue  # a prefix in prose or code (SPIFFE_SIDECAR_, SPIFFE_SIDECAR_IPTABLES_)
            if name not in known and not name.startswith(OTHER_PREFIXES):
                unknown.add(f"{path.relative_to(PACKAGE)}: {name}")
    assert not unknown, "add these to proxy.config.environment: " + ", ".join(sorted(unknown))


def test_only_unknown_sidecar_variables_are_reported() -> None:
    env = {"SPIFFE_SIDECAR_RUNTIM": "uvloop", "SPIFFE_SIDECAR_RUNTIME": "trio", "SPIFFE_SIDECAR_RELAY_THREAD": "1",
           "SPIFFE_SIDECAR_IPTABLES_PROXY_UID": "1337", "SPIFFE_ENDPOINT_SOCKET": "unix:///x", "PATH": "/bin",
           "SPIFFE_SIDECAR_ZZZ": "1"}
    assert unknown_variables(env) == ("SPIFFE_SIDECAR_RUNTIM", "SPIFFE_SIDECAR_ZZZ")


def test_a_warning_names_the_variable_the_closest_known_one_and_all_of_them() -> None:
    typo, far = unknown_variable_warnings({"SPIFFE_SIDECAR_LIMITS_IDLE_TIMOUT": "1m", "SPIFFE_SIDECAR_ZZZ": "1"})
    assert typo.startswith("unknown environment variable SPIFFE_SIDECAR_LIMITS_IDLE_TIMOUT is ignored"
                           " (did you mean SPIFFE_SIDECAR_LIMITS_IDLE_TIMEOUT?); known variables: ")
    assert "did you mean" not in far and all(name in far for name in known_variables())
    assert "SPIFFE_SIDECAR_IPTABLES_*" in far
