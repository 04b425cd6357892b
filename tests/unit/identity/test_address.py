"""Workload API addresses: the two forms the SPIFFE Workload Endpoint spec allows, nothing else."""

from __future__ import annotations

import pytest

from proxy.errors import ConfigError
from proxy.identity.address import ENDPOINT_ENV, WorkloadApiAddress, parse_address, resolve_address


@pytest.mark.parametrize("value, expected", [
    ("unix:///run/spire/agent.sock", WorkloadApiAddress("unix", path="/run/spire/agent.sock")),
    ("unix:/run/spire/agent.sock", WorkloadApiAddress("unix", path="/run/spire/agent.sock")),
    ("tcp://127.0.0.1:8081", WorkloadApiAddress("tcp", host="127.0.0.1", port=8081)),
    ("tcp://[::1]:8081", WorkloadApiAddress("tcp", host="::1", port=8081)),
])
def test_accepts_spec_forms(value: str, expected: WorkloadApiAddress) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize("value, rule", [
    ("", "empty"),
    ("unix://host/run/agent.sock", "three slashes"),
    ("unix://relative.sock", "three slashes"),
    ("unix:relative.sock", "absolute"),
    ("unix:///run/agent.sock?x=1", "query"),
    ("unix:///run/agent.sock#frag", "fragment"),
    ("tcp://localhost:8081", "IP literal"),
    ("tcp://127.0.0.1", "needs a port"),
    ("tcp://127.0.0.1:0", "needs a port"),
    ("tcp://127.0.0.1:99999", "port"),
    ("tcp://127.0.0.1:8081/path", "path"),
    ("tcp://127.0.0.1:8081?q", "query"),
    ("tcp://user@127.0.0.1:8081", "userinfo"),
    ("http://127.0.0.1:8081", "scheme must be unix or tcp"),
    ("relative/agent.sock", "no scheme"),
    ("/tmp/agent.sock", "no scheme: a socket path is written as a URI, unix:///tmp/agent.sock"),
])
def test_rejects_with_value_and_rule(value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_address(value)
    assert repr(value) in str(err.value) and rule in str(err.value)


def test_round_trips_through_str() -> None:
    for text in ("unix:///run/a.sock", "tcp://10.0.0.1:1", "tcp://[::1]:2"):
        assert str(parse_address(text)) == text


def test_explicit_address_wins_over_environment() -> None:
    env = {ENDPOINT_ENV: "unix:///from/env.sock"}
    assert resolve_address("unix:///explicit.sock", env).path == "/explicit.sock"
    assert resolve_address(None, env).path == "/from/env.sock"


def test_a_bare_path_in_the_environment_is_refused_like_everywhere_else() -> None:
    """The spec makes SPIFFE_ENDPOINT_SOCKET a URI with a mandatory scheme (go-spiffe refuses a bare path too)."""
    with pytest.raises(ConfigError) as err:
        resolve_address(None, {ENDPOINT_ENV: "/tmp/agent.sock"})
    assert err.value.file == ENDPOINT_ENV and "unix:///tmp/agent.sock" in str(err.value)


def test_missing_address_names_the_environment_variable() -> None:
    with pytest.raises(ConfigError, match=ENDPOINT_ENV):
        resolve_address(None, {})


def test_invalid_environment_value_names_its_source() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_address(None, {ENDPOINT_ENV: "tcp://example.org:1"})
    assert err.value.file == ENDPOINT_ENV
