"""``protocol:`` and ``http:`` on listeners: defaults, values, and errors naming file:line:field."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.load import load_sidecar_config_text
from proxy.config.model import SidecarConfig
from proxy.errors import ConfigError
from proxy.http.settings import HttpSettings, Protocol
from proxy.http.xfcc import XfccMode

POLICY = "policies:\n  api:\n    - name: a\n      allow: [spiffe://example.org/frontend]\n"
BASE = """\
identity: {workload_api: unix:///run/spiffe/agent.sock}
inbound:
  - name: api
    listen: 0.0.0.0:8443
    forward_to: 127.0.0.1:8080
    policy: api
    protocol: http
    http:
      xfcc: append_forward
      max_head_bytes: 16384
outbound:
  - name: payments
    listen: 127.0.0.1:9001
    connect_to: payments.prod.svc:8443
    expect: spiffe://example.org/ns/prod/sa/payments
    protocol: http
    http: {pool_size: 4, pool_idle_timeout: 30s}
  - name: plain
    listen: 127.0.0.1:9002
    connect_to: db:5432
    expect: spiffe://example.org/db
policy_file: policy.yaml
"""


def load(text: str, tmp_path: Path) -> SidecarConfig:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return load_sidecar_config_text(text, str(tmp_path / "sidecar.yaml"), env={})


def test_protocol_and_http_settings_are_read(tmp_path: Path) -> None:
    c = load(BASE, tmp_path)
    api, payments, plain = c.inbound[0], c.outbound[0], c.outbound[1]
    assert (api.protocol, api.http) == (Protocol.HTTP, HttpSettings(xfcc=XfccMode.APPEND_FORWARD,
                                                                     max_head_bytes=16384))
    assert (payments.protocol, payments.http) == (Protocol.HTTP, HttpSettings(pool_size=4, pool_idle_timeout=30.0))
    assert (plain.protocol, plain.http) == (Protocol.TCP, None)  # tcp stays the default, the L4 path


def test_protocol_http_without_settings_gets_the_defaults(tmp_path: Path) -> None:
    text = BASE.replace("    http:\n      xfcc: append_forward\n      max_head_bytes: 16384\n", "")
    assert load(text, tmp_path).inbound[0].http == HttpSettings()


@pytest.mark.parametrize(("old", "new", "line", "field", "detail"), [
    ("    protocol: http\n    http:\n      xfcc", "    protocol: udp\n    http:\n      xfcc", 7, "inbound[0].protocol",
     "expected one of tcp, http"),
    ("      xfcc: append_forward", "      xfcc: always", 9, "inbound[0].http.xfcc", "sanitize, append_forward"),
    ("      max_head_bytes: 16384", "      max_head_bytes: 10", 10, "inbound[0].http.max_head_bytes",
     "between 1024"),
    ("      max_head_bytes: 16384", "      pool_size: 3", 10, "inbound[0].http.pool_size", "unknown key"),
    ("{pool_size: 4, pool_idle_timeout: 30s}", "{pool_size: 0}", 17, "outbound[0].http.pool_size", "between 1"),
    ("{pool_size: 4, pool_idle_timeout: 30s}", "{xfcc: sanitize}", 17, "outbound[0].http.xfcc", "unknown key"),
    ("    expect: spiffe://example.org/db\n", "    expect: spiffe://example.org/db\n    http: {pool_size: 2}\n", 22,
     "outbound[1].http", "protocol: http listeners only"),
])
def test_http_listener_errors_name_file_line_field(tmp_path: Path, old: str, new: str, line: int, field: str,
                                                   detail: str) -> None:
    assert old in BASE
    with pytest.raises(ConfigError) as info:
        load(BASE.replace(old, new), tmp_path)
    err = info.value
    assert (err.line, err.field) == (line, field), str(err)
    assert detail in str(err) and str(err).startswith(f"{tmp_path / 'sidecar.yaml'}:{line}:")


def test_changing_a_listeners_protocol_needs_a_restart(tmp_path: Path) -> None:
    old = load(BASE, tmp_path)
    new = load(BASE.replace("    protocol: http\n    http: {pool_size", "    protocol: tcp\n    http2: {pool_size")
               .replace("    http2: {pool_size: 4, pool_idle_timeout: 30s}\n", ""), tmp_path)
    assert "outbound" in old.restart_required(new)
