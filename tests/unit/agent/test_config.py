"""agent.yaml: every mistake names file:line:field at start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.agent.config import (
    SOCKET_ENV,
    STATE_DIR_ENV,
    agent_config,
    default_state_dir,
    load_agent_config,
    parse_agent_config,
)
from proxy.errors import ConfigError
from proxy.spiffe.id import SpiffeId, TrustDomain

REPO = Path(__file__).resolve().parents[3]

GOOD = """\
socket_path: /tmp/x/agent.sock
x509_svid_ttl: 90s
trust_domains:
  - name: example.org
  - name: partner.test
    key_type: rsa-2048
    ca_ttl: 2h
entries:
  - spiffe_id: spiffe://example.org/web
    selectors: [unix:uid:1000, "unix:path:/usr/bin/web"]
    jwt_svid_ttl: 1m
    dns_names: [web.example.org]
    federates_with: [partner.test]
    hint: web
"""


def test_example_config_loads() -> None:
    config = load_agent_config(REPO / "examples" / "agent.yaml", env={})
    assert str(config.socket_path) == "/tmp/spiffe-sidecar/agent.sock"
    assert config.x509_svid_ttl == 300 and config.jwt_svid_ttl == 300
    assert [str(e.spiffe_id) for e in config.entries][0] == "spiffe://example.org/frontend"


def test_full_config_reads_every_field() -> None:
    config = parse_agent_config(GOOD)
    assert config.x509_svid_ttl == 90 and config.socket_mode == 0o777
    assert config.trust_domains[1].key_type == "rsa-2048" and config.trust_domains[1].ca_ttl == 7200
    (entry,) = config.entries
    assert entry.spiffe_id == SpiffeId.parse("spiffe://example.org/web")
    assert {str(s) for s in entry.selectors} == {"unix:uid:1000", "unix:path:/usr/bin/web"}
    assert entry.jwt_svid_ttl == 60 and config.entry_x509_ttl(entry) == 90
    assert entry.federates_with == (TrustDomain.parse("partner.test"),) and entry.hint == "web"


def test_env_var_overrides_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(GOOD)
    assert str(load_agent_config(path, env={SOCKET_ENV: "/run/a.sock"}).socket_path) == "/run/a.sock"


def test_the_ca_persists_in_the_default_state_dir_unless_told_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(GOOD.replace("    ca_ttl: 2h\n", "    ca_dir: /srv/partner-ca\n"))
    config = load_agent_config(path, env={})
    assert config.state_dir == default_state_dir() == Path("/var/lib/spiffe-sidecar" if os.geteuid() == 0 else
                                                            Path.home() / ".local/state/spiffe-sidecar")
    ours, partner = config.trust_domains
    assert config.ca_dir_for(ours) == default_state_dir() / "ca"
    assert config.ca_dir_for(partner) == Path("/srv/partner-ca")  # an explicit ca_dir wins
    moved = load_agent_config(path, env={STATE_DIR_ENV: str(tmp_path / "s")})
    assert moved.ca_dir_for(moved.trust_domains[0]) == tmp_path / "s" / "ca"


def test_an_ephemeral_ca_has_no_directory_and_code_built_configs_are_ephemeral() -> None:
    config = parse_agent_config(GOOD.replace("  - name: example.org\n", "  - name: example.org\n    ephemeral_ca: true\n"))
    assert config.ca_dir_for(config.trust_domains[0]) is None
    assert config.ca_dir_for(config.trust_domains[1]) is not None
    built = agent_config(socket_path="/tmp/x.sock")
    assert built.ca_dir_for(built.trust_domains[0]) is None


@pytest.mark.parametrize("text, where, detail", [
    ("trust_domains:\n  - name: a.org\n    ca_dir: /x\n    ephemeral_ca: true\n",
     "<string>:4: trust_domains[0].ephemeral_ca", "remove ca_dir or ephemeral_ca"),
    ("trust_domains: []\n", "<string>:1: trust_domains", "at least one trust domain"),
    ("trust_domains:\n  - name: Example.org\n", "<string>:2: trust_domains[0].name", "lowercase"),
    ("trust_domains:\n  - name: a.org\n    key_type: dsa\n", "<string>:3: trust_domains[0].key_type", "dsa"),
    ("trust_domains:\n  - name: a.org\nsocket_mode: 777\n", "<string>:3: socket_mode", "expected a string"),
    ("trust_domains:\n  - name: a.org\nx509_svid_ttl: soon\n", "<string>:3: x509_svid_ttl", "invalid duration"),
    ("trust_domains:\n  - name: a.org\nentries:\n  - spiffe_id: spiffe://b.org/x\n    selectors: [unix:uid:1]\n",
     "<string>:4: entries[0].spiffe_id", "not in trust_domains"),
    ("trust_domains:\n  - name: a.org\nentries:\n  - spiffe_id: spiffe://a.org\n    selectors: [unix:uid:1]\n",
     "<string>:4: entries[0].spiffe_id", "has no path"),
    ("trust_domains:\n  - name: a.org\nentries:\n  - spiffe_id: spiffe://a.org/x\n    selectors: []\n",
     "<string>:5: entries[0].selectors", "at least one selector"),
    ("trust_domains:\n  - name: a.org\nentries:\n  - spiffe_id: spiffe://a.org/x\n    selectors:\n"
     "      - unix:uid:1\n      - k8s:ns:default\n", "<string>:7: entries[0].selectors[1]", "unknown type"),
    ("trust_domains:\n  - name: a.org\nentries:\n  - spiffe_id: spiffe://a.org/x\n    selectors: [unix:sha256:XYZ]\n",
     "<string>:5: entries[0].selectors[0]", "64 lowercase hex"),
    ("trust_domains:\n  - name: a.org\nentries:\n  - spiffe_id: spiffe://a.org/x\n    selectors: [unix:uid:1]\n"
     "    federates_with: [c.org]\n", "<string>:6: entries[0].federates_with[0]", "not in trust_domains"),
    ("trust_domains:\n  - name: a.org\nentries:\n  - spiffe_id: spiffe://a.org/x\n    selectors: [unix:uid:1]\n"
     "    dns_names: [Bad_Name]\n", "<string>:6: entries[0].dns_names[0]", "invalid DNS name"),
    ("trust_domains:\n  - name: a.org\nentries:\n  - spiffe_id: spiffe://a.org/x\n    selectors: [unix:uid:1]\n"
     "    selector: [unix:uid:2]\n", "<string>:6: entries[0].selector", "unknown key"),
])
def test_invalid_config_names_file_line_and_field(text: str, where: str, detail: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_agent_config(text)
    assert str(err.value).startswith(where), str(err.value)
    assert detail in str(err.value)


def test_programmatic_constructor_builds_entries() -> None:
    config = agent_config(socket_path="/tmp/s.sock", entries=[("spiffe://example.org/a", ["unix:uid:0"])],
                          x509_svid_ttl=4.0)
    assert config.entries[0].spiffe_id == SpiffeId.parse("spiffe://example.org/a")
    assert config.x509_svid_ttl == 4.0 and config.trust_domains[0].trust_domain == TrustDomain.parse("example.org")
