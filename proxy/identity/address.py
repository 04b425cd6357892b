"""Where the Workload API listens: ``SPIFFE_ENDPOINT_SOCKET`` or an explicit address.

The SPIFFE Workload Endpoint spec makes the address an RFC 3986 URI of two
forms, and this is the one parser for it (sidecar.yaml's
``identity.workload_api``, ``SPIFFE_ENDPOINT_SOCKET``, ``--address``):

- ``unix:///absolute/path``: scheme ``unix``, no authority, an absolute
  path, nothing else (``unix:/absolute/path`` is the same URI without the
  empty authority, as grpcio spells it);
- ``tcp://<IP literal>:<port>``, with no path, query, fragment or userinfo.

A bare path (``/tmp/agent.sock``) is refused: it is not a URI, the spec
says the scheme is mandatory, and go-spiffe refuses it too, so an address
that works here works with every other SPIFFE client. Anything else is
rejected with an error naming the value and the rule.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from dataclasses import dataclass
from typing import Mapping

from proxy.errors import ConfigError

#: The environment variable clients MUST fall back to (SPIFFE Workload Endpoint spec).
ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"


@dataclass(frozen=True, slots=True)
class WorkloadApiAddress:
    """A parsed Workload API address.

    Attributes:
        scheme: "unix" or "tcp".
        path: the socket path (unix only, else "").
        host: the IP literal (tcp only, else "").
        port: the TCP port (tcp only, else 0).
    """

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def _bad(value: str, rule: str, source: str) -> ConfigError:
    return ConfigError(source, None, "address",
                       f"invalid Workload API address {value!r}: {rule} "
                       "(expected unix:///absolute/path or tcp://IP:port)")


def parse_address(value: str, *, source: str = "<address>") -> WorkloadApiAddress:
    """Parse a Workload API address.

    Args:
        value: the address text.
        source: where it came from (a flag, the environment), for the error.

    Raises:
        ConfigError: naming the value and the rule it breaks.
    """
    if not value:
        raise _bad(value, "the address is empty", source)
    if value.startswith("/"):
        raise _bad(value, f"no scheme: a socket path is written as a URI, unix://{value}", source)
    url = urllib.parse.urlsplit(value)
    if url.scheme == "unix":
        return _parse_unix(value, url, source)
    if url.scheme == "tcp":
        return _parse_tcp(value, url, source)
    raise _bad(value, f"scheme must be unix or tcp, not {url.scheme!r}" if url.scheme else "no scheme", source)


def _parse_unix(value: str, url: urllib.parse.SplitResult, source: str) -> WorkloadApiAddress:
    if url.netloc:
        raise _bad(value, "a unix address has no authority: write unix:///abs/path (three slashes)", source)
    if url.query or url.fragment or "?" in value or "#" in value:
        raise _bad(value, "a unix address must not have a query or fragment", source)
    if not url.path.startswith("/"):
        raise _bad(value, "the socket path must be absolute", source)
    return WorkloadApiAddress("unix", path=url.path)


def _parse_tcp(value: str, url: urllib.parse.SplitResult, source: str) -> WorkloadApiAddress:
    if url.path or url.query or url.fragment or "?" in value or "#" in value:
        raise _bad(value, "a tcp address must not have a path, query or fragment", source)
    if url.username is not None or url.password is not None or "@" in url.netloc:
        raise _bad(value, "a tcp address must not have userinfo", source)
    try:
        port = url.port
    except ValueError:
        raise _bad(value, "the port must be a number from 1 to 65535", source) from None
    if port is None or port == 0:
        raise _bad(value, "a tcp address needs a port", source)
    try:
        host = ipaddress.ip_address(url.hostname or "")
    except ValueError:
        raise _bad(value, "the host must be an IP literal, not a name", source) from None
    return WorkloadApiAddress("tcp", host=str(host), port=port)


def resolve_address(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> WorkloadApiAddress:
    """The explicit address if given, else ``SPIFFE_ENDPOINT_SOCKET``.

    Raises:
        ConfigError: when neither is set, or the value is invalid.
    """
    if explicit:
        return parse_address(explicit, source="--address")
    env = os.environ if environ is None else environ
    value = env.get(ENDPOINT_ENV, "")
    if not value:
        raise ConfigError(ENDPOINT_ENV, None, "address",
                          f"no Workload API address: pass --address or set {ENDPOINT_ENV} "
                          "(e.g. unix:///run/spire/agent.sock)")
    return parse_address(value, source=ENDPOINT_ENV)
