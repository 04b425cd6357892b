"""``protocol:`` and ``http:`` of a listener: requests, not just connections (issue 13).

::

    inbound:
      - name: api
        protocol: http          # tcp (default) | http: HTTP/1.1 and HTTP/2, detected
        http:
          xfcc: sanitize        # sanitize (default) | append_forward | forward_only
          max_head_bytes: 65536 # request line + headers; more is refused (431)
    outbound:
      - name: payments
        protocol: http
        http:
          pool_size: 8          # mTLS connections kept per upstream (HTTP/1.1); h2 multiplexes on one
          pool_idle_timeout: 60s

``http:`` without ``protocol: http`` is an error (it would be silently
ignored), and so is an unknown key.
"""

from __future__ import annotations

from proxy.config.checks import enum_choice, int_range, positive_duration
from proxy.yamlfields import Section
from proxy.http.settings import HttpSettings, Protocol
from proxy.http.xfcc import XfccMode

INBOUND_HTTP_KEYS = ("xfcc", "max_head_bytes")
OUTBOUND_HTTP_KEYS = ("max_head_bytes", "pool_size", "pool_idle_timeout")


def read_protocol(sec: Section, *, inbound: bool) -> tuple[Protocol, HttpSettings | None]:
    """Read ``protocol`` and ``http`` of one listener item.

    Raises:
        ConfigError: bad value, unknown key, or ``http:`` on a tcp listener.
    """
    protocol = sec.take("protocol", str, default=Protocol.TCP, check=enum_choice(Protocol))
    http = sec.take_section("http")
    if protocol is Protocol.TCP:
        if http is not None:
            raise sec.error("http", "http: applies to protocol: http listeners only (add protocol: http)")
        return protocol, None
    if http is None:
        return protocol, HttpSettings()
    known = INBOUND_HTTP_KEYS if inbound else OUTBOUND_HTTP_KEYS
    for key in http.data:
        if key not in known:
            raise http.error(str(key), f"unknown key (an {'inbound' if inbound else 'outbound'} listener's"
                             f" http: has {', '.join(known)})")
    defaults = HttpSettings()
    settings = HttpSettings(
        xfcc=http.take("xfcc", str, default=defaults.xfcc, check=enum_choice(XfccMode)),
        max_head_bytes=http.take("max_head_bytes", int, default=defaults.max_head_bytes,
                                 check=int_range(1024, 1 << 20)),
        pool_size=http.take("pool_size", int, default=defaults.pool_size, check=int_range(1, 1024)),
        pool_idle_timeout=http.take("pool_idle_timeout", (str, int, float), default=defaults.pool_idle_timeout,
                                    check=positive_duration))
    http.finish()
    return protocol, settings
