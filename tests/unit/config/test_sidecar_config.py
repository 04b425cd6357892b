"""sidecar.yaml: defaults, listeners, loopback rules, env overrides, cross-file policy checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.config.load import (check_policy_references, env_var_name, load_sidecar, load_sidecar_config,
                               load_sidecar_config_text)
from proxy.config.model import HostPort, LogFormat, LogLevel, Runtime, SidecarConfig
from proxy.errors import ConfigError
from proxy.policy import load_policy_text

ROOT = Path(__file__).resolve().parents[3]
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


def error_of(text: str, cfgdir: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, cfgdir, env)
    return info.value


def test_examples_load_and_agree() -> None:
    config, policies = load_sidecar(ROOT / "examples" / "sidecar.yaml", env={})
    assert policies is not None and config.policy_file == ROOT / "examples" / "policy.yaml"
    assert [i.name for i in config.inbound] == ["api"] and config.inbound[0].policy in policies
    assert config.admin is not None and str(config.admin.listen) == "127.0.0.1:15000"
    assert load_sidecar_config(ROOT / "examples" / "sidecar.yaml", env={}) == config


def test_minimal_config_gets_documented_defaults(cfgdir: Path) -> None:
    c = load(BASE, cfgdir)
    assert c.runtime is Runtime.TRIO and c.drain_timeout == 30.0 and c.admin is None
    assert c.log.level is LogLevel.INFO and c.log.access == "stdout" and c.log.format is LogFormat.AUTO
    lim = c.limits
    assert (lim.handshake_timeout, lim.connect_timeout, lim.idle_timeout) == (10.0, 5.0, 300.0)
    assert (lim.max_connections, lim.buffer_size, lim.max_connection_lifetime) == (10000, 65536, None)
    assert c.inbound[0].listen == HostPort(host="0.0.0.0", port=8443)
    assert c.policy_file == cfgdir / "policy.yaml"
    assert c.outbound[0].expect.matches("spiffe://example.org/ns/prod/sa/payments")
    assert not c.outbound[0].expect.matches("spiffe://example.org/ns/prod/sa/other")


def test_limits_parse_units_and_listener_overrides_inherit_the_rest(cfgdir: Path) -> None:
    text = BASE.replace("    policy: api\n", "    policy: api\n    limits: {idle_timeout: 0, buffer_size: 1MiB}\n")
    text += "limits: {handshake_timeout: 2s, idle_timeout: 1m30s, buffer_size: 16KiB, max_connection_lifetime: 1h}\n"
    c = load(text, cfgdir)
    assert c.limits.idle_timeout == 90.0 and c.limits.buffer_size == 16384 and c.limits.max_connection_lifetime == 3600
    own = c.inbound[0].limits
    assert own.idle_timeout is None and own.buffer_size == 1 << 20 and own.handshake_timeout == 2.0
    assert c.outbound[0].limits == c.limits


def test_expect_accepts_a_list_a_glob_and_a_trust_domain(cfgdir: Path) -> None:
    text = BASE.replace("expect: spiffe://example.org/ns/prod/sa/payments",
                        "expect: ['spiffe://example.org/ns/*/sa/payments', {trust_domain: partner.org}]")
    m = load(text, cfgdir).outbound[0].expect
    assert m.matches("spiffe://example.org/ns/dev/sa/payments") and m.matches("spiffe://partner.org/x")
    td = load(BASE.replace("expect: spiffe://example.org/ns/prod/sa/payments", "expect: {trust_domain: e.org}"),
              cfgdir).outbound[0].expect
    assert td.matches("spiffe://e.org/a") and not td.matches("spiffe://f.org/a")


def test_ipv6_addresses_use_brackets(cfgdir: Path) -> None:
    c = load(BASE.replace("127.0.0.1:9001", "'[::1]:9001'").replace("0.0.0.0:8443", "'[::]:8443'"), cfgdir)
    assert c.outbound[0].listen == HostPort(host="::1", port=9001) and str(c.outbound[0].listen) == "[::1]:9001"
    assert c.outbound[0].listen.is_loopback and str(c.inbound[0].listen) == "[::]:8443"


def test_non_loopback_plaintext_needs_an_explicit_opt_in(cfgdir: Path) -> None:
    err = error_of(BASE.replace("forward_to: 127.0.0.1:8080", "forward_to: 10.0.0.5:8080"), cfgdir)
    assert (err.line, err.field) == (5, "inbound[0].forward_to") and "allow_non_loopback_forward" in err.detail
    c = load(BASE.replace("forward_to: 127.0.0.1:8080",
                          "forward_to: 10.0.0.5:8080\n    allow_non_loopback_forward: true"), cfgdir)
    assert c.inbound[0].allow_non_loopback_forward
    err = error_of(BASE.replace("listen: 127.0.0.1:9001", "listen: 0.0.0.0:9001"), cfgdir)
    assert (err.line, err.field) == (9, "outbound[0].listen") and "allow_non_loopback_listen" in err.detail
    err = error_of(BASE + "admin: {listen: 0.0.0.0:15000}\n", cfgdir)
    assert err.field == "admin.listen" and "allow_non_loopback" in err.detail


@pytest.mark.parametrize("old, new, line, field, detail", [
    ("listen: 0.0.0.0:8443", "listen: 0.0.0.0:0", 4, "inbound[0].listen", "port must be a number from 1 to 65535"),
    ("listen: 0.0.0.0:8443", "listen: 0.0.0.0:65536", 4, "inbound[0].listen", "from 1 to 65535"),
    ("listen: 0.0.0.0:8443", "listen: '::1:8443'", 4, "inbound[0].listen", "IPv6 address in brackets"),
    ("listen: 0.0.0.0:8443", "listen: 8443", 4, "inbound[0].listen", "expected a string"),
    ("listen: 0.0.0.0:8443", "listen: api.local:8443", 4, "inbound[0].listen", "a listen address is an IP"),
    ("connect_to: payments.prod.svc:8443", "connect_to: pay_ments!:8443", 10, "outbound[0].connect_to",
     "neither an IP address nor a host name"),
    ("expect: spiffe://example.org/ns/prod/sa/payments", "expect: spiffe://example.org/pay*", 11,
     "outbound[0].expect", "mixes '*'"),
    ("expect: spiffe://example.org/ns/prod/sa/payments", "expect: [spiffe://e.org/a, 'spiffe://E.org/b']", 11,
     "outbound[0].expect[1]", "trust domain characters"),
    ("    expect: spiffe://example.org/ns/prod/sa/payments\n", "", 8, "outbound[0].expect", "is required"),
    ("    policy: api\n", "    policy: api\n    polcy: x\n", 7, "inbound[0].polcy", "unknown key"),
    ("    policy: api\n", "    policy: missing\n", 6, "inbound[0].policy", "no policy 'missing' in"),
    ("name: payments", "name: api", 8, "outbound[0].name", "duplicate listener name 'api' (first at line 3)"),
    ("name: payments", "name: 'pay ments'", 8, "outbound[0].name", "invalid listener name"),
    ("policy_file: policy.yaml\n", "", 2, "policy_file", "is required"),
    ("policy_file: policy.yaml", "policy_file: nope.yaml", 12, "policy_file", "cannot read"),
    ("policy_file: policy.yaml", "policy_file: policy.yaml\nruntime: asyncio", 13, "runtime",
     "expected one of trio, uvloop"),
    ("policy_file: policy.yaml", "policy_file: policy.yaml\nlimits: {idle_timeout: soon}", 13,
     "limits.idle_timeout", "invalid duration"),
    ("policy_file: policy.yaml", "policy_file: policy.yaml\nlimits: {max_connections: 0}", 13,
     "limits.max_connections", "between 1 and"),
    ("policy_file: policy.yaml", "policy_file: policy.yaml\nlimits: {buffer_size: 64kb}", 13,
     "limits.buffer_size", "invalid size"),
    ("policy_file: policy.yaml", "policy_file: policy.yaml\nlimits: {timeout: 1s}", 13, "limits.timeout",
     "unknown key"),
    ("policy_file: policy.yaml", "policy_file: policy.yaml\nlog: {format: xml}", 13, "log.format",
     "expected one of json, text, auto"),
    ("policy_file: policy.yaml", "policy_file: policy.yaml\nextra: 1", 13, "extra", "unknown key"),
    ("unix:///run/spiffe/agent.sock", "/run/spiffe/agent.sock", 1, "identity.workload_api",
     "no scheme: a socket path is written as a URI, unix:///run/spiffe/agent.sock"),
    ("unix:///run/spiffe/agent.sock", "tcp://agent:8081", 1, "identity.workload_api", "must be an IP literal"),
    ("{workload_api: unix:///run/spiffe/agent.sock}",
     "{workload_api: unix:///a.sock, files: {cert: c, key: k, bundle: b}}", 1, "identity.files", "not both"),
    ("{workload_api: unix:///run/spiffe/agent.sock}", "{files: {cert: c, key: k}}", 1, "identity.files.bundle",
     "is required"),
    # A misspelt required key is reported as the unknown key it is, at its line, not as "forward_to: is required".
    ("    forward_to: 127.0.0.1:8080", "    forwad_to: 127.0.0.1:8080", 5, "inbound[0].forwad_to",
     "unknown key (did you mean 'forward_to'?)"),
    ("    expect: spiffe", "    expct: spiffe", 11, "outbound[0].expct", "unknown key (did you mean 'expect'?)"),
    ("policy_file: policy.yaml", "policy_file: policy.yaml\nlimits: {idle_timout: 1s}", 13, "limits.idle_timout",
     "unknown key (did you mean 'idle_timeout'?)"),
    ("policy_file: policy.yaml", "policy_file: nosuch.yaml", 12, "policy_file", "cannot read"),
])
def test_config_error_names_line_and_field(cfgdir: Path, old: str, new: str, line: int | None, field: str,
                                           detail: str) -> None:
    assert old in BASE
    err = error_of(BASE.replace(old, new), cfgdir)
    assert (err.line, err.field) == (line, field), str(err)
    assert detail in err.detail, str(err)


def test_load_sidecar_reports_an_unreadable_policy_file_where_it_is_named(cfgdir: Path) -> None:
    (cfgdir / "sidecar.yaml").write_text(BASE.replace("policy_file: policy.yaml", "policy_file: nosuch.yaml"))
    with pytest.raises(ConfigError) as info:
        load_sidecar(cfgdir / "sidecar.yaml", env={})
    assert (info.value.line, info.value.field) == (12, "policy_file") and "nosuch.yaml" in info.value.detail
    with pytest.raises(ConfigError) as info:
        load_sidecar(cfgdir / "sidecar.yaml", env={"SPIFFE_SIDECAR_POLICY_FILE": str(cfgdir / "other.yaml")})
    assert info.value.file == "$SPIFFE_SIDECAR_POLICY_FILE" and "other.yaml" in info.value.detail


def test_identity_files_resolve_relative_to_the_config_directory(cfgdir: Path) -> None:
    text = BASE.replace("{workload_api: unix:///run/spiffe/agent.sock}",
                        "{files: {cert: svid.pem, key: /abs/svid.key, bundle: b.pem,"
                        " federated_bundles: {partner.org: p.pem}}}")
    files = load(text, cfgdir).identity.files
    assert files is not None and files.cert == cfgdir / "svid.pem" and files.key == Path("/abs/svid.key")
    assert files.federated_bundles == {"partner.org": cfgdir / "p.pem"}
    err = error_of(text.replace("partner.org:", "Partner.org:"), cfgdir)
    assert err.field == "identity.files.federated_bundles.Partner.org" and "trust domain" in err.detail


def test_identity_spiffe_id_chooses_the_svid_from_the_file_the_variable_or_beside_the_endpoint_socket(
        cfgdir: Path) -> None:
    text = BASE.replace("{workload_api: unix:///run/spiffe/agent.sock}",
                        "{workload_api: unix:///run/spiffe/agent.sock, spiffe_id: spiffe://example.org/backend}")
    assert load(text, cfgdir).identity.spiffe_id == "spiffe://example.org/backend"
    assert load(BASE, cfgdir).identity.spiffe_id is None  # the Workload API's first, as before
    env = {"SPIFFE_SIDECAR_IDENTITY_SPIFFE_ID": "spiffe://example.org/sidecar"}
    assert load(BASE, cfgdir, env=env).identity.spiffe_id == "spiffe://example.org/sidecar"
    only_id = BASE.replace("{workload_api: unix:///run/spiffe/agent.sock}", "{spiffe_id: spiffe://example.org/a}")
    c = load(only_id, cfgdir, env={"SPIFFE_ENDPOINT_SOCKET": "unix:///tmp/agent.sock"})
    assert c.identity.from_env and c.identity.spiffe_id == "spiffe://example.org/a"
    err = error_of(text.replace("spiffe://example.org/backend", "spiffe://Example.org/backend"), cfgdir)
    assert (err.line, err.field) == (1, "identity.spiffe_id") and "Invalid SPIFFE ID" in err.detail
    err = error_of(BASE.replace("{workload_api: unix:///run/spiffe/agent.sock}",
                                "{files: {cert: c, key: k, bundle: b}, spiffe_id: spiffe://example.org/a}"), cfgdir)
    assert err.field == "identity.spiffe_id" and "files hold exactly one" in err.detail


def test_spiffe_endpoint_socket_is_the_fallback_identity(cfgdir: Path) -> None:
    text = BASE.replace("identity: {workload_api: unix:///run/spiffe/agent.sock}\n", "")
    c = load(text, cfgdir, env={"SPIFFE_ENDPOINT_SOCKET": "unix:///tmp/agent.sock"})
    assert c.identity.workload_api == "unix:///tmp/agent.sock" and c.identity.from_env
    err = error_of(text, cfgdir)
    assert err.field == "identity" and "SPIFFE_ENDPOINT_SOCKET" in err.detail
    err = error_of(text, cfgdir, env={"SPIFFE_ENDPOINT_SOCKET": "agent.sock"})
    assert err.file == "$SPIFFE_ENDPOINT_SOCKET"


ADDRESSES = ["unix:///run/a.sock", "unix:/run/a.sock", "/tmp/agent.sock", "unix://host/a.sock", "unix:rel.sock",
             "unix:///a.sock?x", "tcp://127.0.0.1:8081", "tcp://[::1]:8081", "tcp://agent:8081", "tcp://127.0.0.1",
             "tcp://127.0.0.1:8081/p", "tcp://u@127.0.0.1:1", "http://127.0.0.1:1", "agent.sock", ""]


@pytest.mark.parametrize("address", ADDRESSES)
def test_sidecar_yaml_the_environment_and_the_client_accept_the_same_addresses(cfgdir: Path, address: str) -> None:
    """One parser: what the client (--address, SPIFFE_ENDPOINT_SOCKET) accepts, sidecar.yaml accepts, and no more."""
    from proxy.identity.address import parse_address

    try:
        expected: str | None = str(parse_address(address))
    except ConfigError:
        expected = None
    without = BASE.replace("identity: {workload_api: unix:///run/spiffe/agent.sock}\n", "")
    in_file = BASE.replace("unix:///run/spiffe/agent.sock", json.dumps(address))
    for text, env in ((in_file, {}), (without, {"SPIFFE_ENDPOINT_SOCKET": address})):
        if expected is None:
            error_of(text, cfgdir, env=env)
        else:
            assert load(text, cfgdir, env=env).identity.workload_api == expected


def test_environment_variables_override_one_field_each(cfgdir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-policy.yaml"
    other.write_text(POLICY)
    env = {"SPIFFE_SIDECAR_RUNTIME": "uvloop", "SPIFFE_SIDECAR_LOG_LEVEL": "debug",
           "SPIFFE_SIDECAR_IDENTITY_WORKLOAD_API": "tcp://127.0.0.1:8081",
           "SPIFFE_SIDECAR_POLICY_FILE": str(other), "SPIFFE_SIDECAR_LIMITS_MAX_CONNECTIONS": "7",
           "SPIFFE_SIDECAR_LIMITS_IDLE_TIMEOUT": "0", "SPIFFE_SIDECAR_ADMIN_LISTEN": "127.0.0.1:15001",
           "SPIFFE_SIDECAR_DRAIN_TIMEOUT": "5s"}
    c = load(BASE, cfgdir, env=env)
    assert c.runtime is Runtime.UVLOOP and c.log.level is LogLevel.DEBUG
    assert c.identity.workload_api == "tcp://127.0.0.1:8081" and c.policy_file == other
    assert c.limits.max_connections == 7 and c.limits.idle_timeout is None
    assert c.inbound[0].limits.max_connections == 7       # listeners inherit the global value
    assert c.admin is not None and c.admin.listen.port == 15001 and c.drain_timeout == 5.0


def test_a_bad_environment_value_names_the_variable(cfgdir: Path) -> None:
    err = error_of(BASE, cfgdir, env={"SPIFFE_SIDECAR_RUNTIME": "asyncio"})
    assert str(err) == "$SPIFFE_SIDECAR_RUNTIME: runtime: expected one of trio, uvloop, got 'asyncio'"
    err = error_of(BASE, cfgdir, env={"SPIFFE_SIDECAR_LIMITS_MAX_CONNECTIONS": "many"})
    assert err.file == "$SPIFFE_SIDECAR_LIMITS_MAX_CONNECTIONS" and err.field == "limits.max_connections"


def test_first_svid_timeout_is_a_duration_in_the_file_and_its_variable_still_wins(cfgdir: Path) -> None:
    assert load(BASE, cfgdir).first_svid_timeout == 30.0
    assert load(BASE + "first_svid_timeout: 2m\n", cfgdir).first_svid_timeout == 120.0
    env = {"SPIFFE_SIDECAR_FIRST_SVID_TIMEOUT": "3s"}
    assert load(BASE + "first_svid_timeout: 2m\n", cfgdir, env=env).first_svid_timeout == 3.0


def test_first_svid_timeout_must_be_a_positive_duration(cfgdir: Path) -> None:
    err = error_of(BASE + "first_svid_timeout: 0s\n", cfgdir)
    assert (err.line, err.field) == (13, "first_svid_timeout") and "must be more than 0" in err.detail
    err = error_of(BASE, cfgdir, env={"SPIFFE_SIDECAR_FIRST_SVID_TIMEOUT": "soon"})
    assert str(err).startswith("$SPIFFE_SIDECAR_FIRST_SVID_TIMEOUT: first_svid_timeout: invalid duration 'soon'")


@pytest.mark.parametrize("kind, index, line", [("inbound", 0, 3), ("outbound", 0, 8)])
@pytest.mark.parametrize("reserved", ["transparent-inbound", "transparent-outbound"])
def test_listener_names_of_the_transparent_listeners_are_reserved(cfgdir: Path, kind: str, index: int, line: int,
                                                                   reserved: str) -> None:
    """Their connections share the label: a user listener by that name would merge its metrics with theirs."""
    old = "- name: api" if kind == "inbound" else "- name: payments"
    err = error_of(BASE.replace(old, f"- name: {reserved}"), cfgdir)
    assert (err.line, err.field) == (line, f"{kind}[{index}].name")
    assert f"listener name {reserved!r} is reserved" in err.detail


def test_env_var_names_follow_the_field_path() -> None:
    assert env_var_name("runtime") == "SPIFFE_SIDECAR_RUNTIME"
    assert env_var_name("identity.workload_api") == "SPIFFE_SIDECAR_IDENTITY_WORKLOAD_API"
    assert env_var_name("inbound[0].listen") is None


def test_policy_reload_that_drops_a_referenced_policy_is_rejected(cfgdir: Path) -> None:
    c = load(BASE, cfgdir)
    check_policy_references(c, load_policy_text(POLICY, "policy.yaml"))
    with pytest.raises(ConfigError) as info:
        check_policy_references(c, load_policy_text("policies:\n  other: []\n", "policy.yaml"))
    assert (info.value.line, info.value.field) == (6, "inbound[0].policy")
    assert "'other'" in info.value.detail


def test_a_bad_policy_file_is_reported_with_its_own_location(cfgdir: Path) -> None:
    (cfgdir / "policy.yaml").write_text("policies:\n  api:\n    - name: a\n      allow: []\n")
    err = error_of(BASE, cfgdir)
    assert err.file.endswith("policy.yaml") and (err.line, err.field) == (4, "policies.api[0].allow")


def test_redacted_is_json_ready_and_readable(cfgdir: Path) -> None:
    data = load(BASE + "admin: {listen: 127.0.0.1:15000}\n", cfgdir).redacted()
    json.dumps(data)
    assert data["runtime"] == "trio" and data["limits"]["idle_timeout"] == "5m"
    assert data["inbound"][0]["listen"] == "0.0.0.0:8443"
    assert data["outbound"][0]["expect"] == ["spiffe://example.org/ns/prod/sa/payments"]
    assert data["admin"]["listen"] == "127.0.0.1:15000"


def test_a_listeners_own_buffer_size_is_carried_to_its_connections(cfgdir: Path) -> None:
    """Per-listener limits.buffer_size was parsed and then ignored (the plane used the global one)."""
    from proxy.operations.live import LiveSettings

    text = BASE.replace("    expect: spiffe://example.org/ns/prod/sa/payments\n",
                        "    expect: spiffe://example.org/ns/prod/sa/payments\n    limits: {buffer_size: 1MiB}\n")
    live = LiveSettings.build(load(text + "limits: {buffer_size: 16KiB}\n", cfgdir), None)
    assert live.outbound_specs["payments"].buffer_size == 1 << 20


def test_config_is_immutable(cfgdir: Path) -> None:
    c = load(BASE, cfgdir)
    with pytest.raises(AttributeError):
        c.runtime = Runtime.UVLOOP  # type: ignore[misc]


def test_reload_tells_what_needs_a_restart(cfgdir: Path) -> None:
    old = load(BASE, cfgdir)
    assert old.restart_required(load(BASE + "limits: {idle_timeout: 1m}\nlog: {level: debug}\ndrain_timeout: 5s\n",
                                     cfgdir)) == ()
    moved = load(BASE.replace("0.0.0.0:8443", "0.0.0.0:9443").replace("trio", "uvloop") + "runtime: uvloop\n",
                 cfgdir)
    assert moved.restart_required(old) == ("runtime", "inbound")


def test_identity_files_can_come_from_the_environment(cfgdir: Path) -> None:
    text = BASE.replace("identity: {workload_api: unix:///run/spiffe/agent.sock}\n", "")
    env = {f"SPIFFE_SIDECAR_IDENTITY_FILES_{k.upper()}": f"/etc/svid/{k}.pem" for k in ("cert", "key", "bundle")}
    files = load(text, cfgdir, env=env).identity.files
    assert files is not None and files.key == Path("/etc/svid/key.pem")


@pytest.mark.parametrize("change, field", [
    ("log: {access: stderr}\n", "log.access"),
    ("log: {format: text}\n", "log.format"),
    ("limits: {buffer_size: 1MiB}\n", "limits.buffer_size"),
    ("first_svid_timeout: 5s\n", "first_svid_timeout"),
])
def test_what_is_built_once_at_start_needs_a_restart(cfgdir: Path, change: str, field: str) -> None:
    """The access log sink and the data plane's buffers are fixed at start."""
    assert load(BASE, cfgdir).restart_required(load(BASE + change, cfgdir)) == (field,)


def test_peer_expiry_defaults_to_reauthenticate_inbound_and_keep_outbound(cfgdir: Path) -> None:
    from proxy.connection.reauth import PeerExpiry

    c = load(BASE, cfgdir)
    assert c.inbound[0].peer_expiry is PeerExpiry.REAUTHENTICATE and c.outbound[0].peer_expiry is PeerExpiry.KEEP
    c = load(BASE.replace("    policy: api\n", "    policy: api\n    peer_expiry: close\n")
             .replace("    expect: spiffe", "    peer_expiry: close\n    expect: spiffe"), cfgdir)
    assert c.inbound[0].peer_expiry is PeerExpiry.CLOSE and c.outbound[0].peer_expiry is PeerExpiry.CLOSE


@pytest.mark.parametrize("old, new, line, field, detail", [
    ("    policy: api\n", "    policy: api\n    peer_expiry: renew\n", 7, "inbound[0].peer_expiry",
     "expected one of reauthenticate, close, keep, got 'renew'"),
    ("    expect: spiffe", "    peer_expiry: reauthenticate\n    expect: spiffe", 11, "outbound[0].peer_expiry",
     "'reauthenticate' is for inbound listeners: a TLS client cannot ask the upstream"),
])
def test_peer_expiry_errors_name_line_and_field(cfgdir: Path, old: str, new: str, line: int, field: str,
                                                detail: str) -> None:
    err = error_of(BASE.replace(old, new), cfgdir)
    assert (err.line, err.field) == (line, field), str(err)
    assert detail in err.detail, str(err)
