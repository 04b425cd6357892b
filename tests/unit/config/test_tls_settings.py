"""``tls.session_resumption``: globally, per listener, from the environment, and its errors (issue 10.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.load import load_sidecar_config_text
from proxy.config.model import SidecarConfig
from proxy.errors import ConfigError
from proxy.operations.live import LiveSettings

POLICY = "policies:\n  api:\n    - name: a\n      allow: [spiffe://example.org/frontend]\n"
BASE = """\
identity: {workload_api: unix:///run/spiffe/agent.sock}
inbound:
  - name: api
    listen: 0.0.0.0:8443
    forward_to: 127.0.0.1:8080
    policy: api
outbound:
  - name: payments
    listen: 127.0.0.1:9001
    connect_to: payments.prod.svc:8443
    expect: spiffe://example.org/ns/prod/sa/payments
policy_file: policy.yaml
"""


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return tmp_path


def load(text: str, cfgdir: Path, env: dict[str, str] | None = None) -> SidecarConfig:
    return load_sidecar_config_text(text, str(cfgdir / "sidecar.yaml"), env=env or {})


def specs(config: SidecarConfig) -> tuple[bool, bool]:
    live = LiveSettings.build(config, None)
    return live.inbound_specs["api"].session_resumption, live.outbound_specs["payments"].session_resumption


def test_session_resumption_is_on_by_default(cfgdir: Path) -> None:
    config = load(BASE, cfgdir)
    assert config.tls.session_resumption and specs(config) == (True, True)


def test_session_resumption_off_globally_reaches_every_listener(cfgdir: Path) -> None:
    assert specs(load(BASE + "tls: {session_resumption: false}\n", cfgdir)) == (False, False)


def test_a_listener_overrides_the_global_setting(cfgdir: Path) -> None:
    text = BASE.replace("    policy: api\n", "    policy: api\n    tls: {session_resumption: false}\n")
    assert specs(load(text, cfgdir)) == (False, True)
    text = BASE.replace("    expect: spiffe://example.org/ns/prod/sa/payments\n",
                        "    expect: spiffe://example.org/ns/prod/sa/payments\n    tls: {session_resumption: true}\n")
    assert specs(load(text + "tls: {session_resumption: false}\n", cfgdir)) == (False, True)


def test_the_environment_variable_wins(cfgdir: Path) -> None:
    config = load(BASE + "tls: {session_resumption: true}\n", cfgdir,
                  env={"SPIFFE_SIDECAR_TLS_SESSION_RESUMPTION": "false"})
    assert specs(config) == (False, False)


@pytest.mark.parametrize("text, line, field", [
    (BASE + "tls: {session_resumption: sometimes}\n", 13, "tls.session_resumption"),
    (BASE + "tls: {resumption: false}\n", 13, "tls.resumption"),
    (BASE.replace("    policy: api\n", "    policy: api\n    tls: {session_resumption: 3}\n"), 7,
     "inbound[0].tls.session_resumption"),
])
def test_a_bad_value_names_file_line_and_field(cfgdir: Path, text: str, line: int, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(text, cfgdir)
    assert (info.value.line, info.value.field) == (line, field), info.value
    assert info.value.file.endswith("sidecar.yaml")


def test_pending_handshake_limits_have_defaults_overrides_and_variables(cfgdir: Path) -> None:
    config = load(BASE, cfgdir)
    assert (config.limits.max_pending_handshakes, config.limits.max_pending_handshakes_per_source) == (1024, 128)
    text = BASE.replace("    policy: api\n", "    policy: api\n    limits: {max_pending_handshakes_per_source: 8}\n")
    config = load(text + "limits: {max_pending_handshakes: 64}\n", cfgdir,
                  env={"SPIFFE_SIDECAR_LIMITS_MAX_PENDING_HANDSHAKES_PER_SOURCE": "16"})
    assert (config.inbound[0].limits.max_pending_handshakes, config.inbound[0].limits.max_pending_handshakes_per_source
            ) == (64, 8)  # the listener's own value; the variable sets the global one
    assert config.limits.max_pending_handshakes_per_source == 16
    with pytest.raises(ConfigError) as info:
        load(BASE + "limits: {max_pending_handshakes: 0}\n", cfgdir)
    assert (info.value.line, info.value.field) == (13, "limits.max_pending_handshakes")
