"""The demo's HTTP check: the same caller, one request allowed and one denied by its path.

The backend sidecar has a second inbound listener with ``protocol: http``
(policy ``backend-http``: the frontend may GET ``/orders/**``; ``/admin/**``
is denied to everyone); the frontend sidecar reaches it through an outbound
``protocol: http`` listener. Both requests come from the same workload over
the same kind of connection: only the path decides.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.demo.apps import http_get

POLICY = """\
  backend-http:
    - name: no-admin
      deny: ["spiffe://{td}/**"]
      http: {{paths: ["/admin/**"]}}
    - name: frontend-orders
      allow: [spiffe://{td}/frontend]
      http: {{methods: [GET, HEAD], paths: ["/orders/**"]}}
"""


def inbound_yaml(port: int, app_port: int) -> str:
    """The backend sidecar's HTTP inbound listener (appended to its ``inbound:`` list)."""
    return (f"  - name: api-http\n    listen: 127.0.0.1:{port}\n    forward_to: 127.0.0.1:{app_port}\n"
            f"    policy: backend-http\n    protocol: http\n")


def outbound_yaml(port: int, upstream_port: int, expect: str) -> str:
    """The frontend sidecar's HTTP outbound listener (appended to its ``outbound:`` list)."""
    return (f"  - name: backend-http\n    listen: 127.0.0.1:{port}\n    connect_to: 127.0.0.1:{upstream_port}\n"
            f"    expect: {expect}\n    protocol: http\n")


def _request_record(demo: Any, path: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The backend sidecar's access-log line for the request to ``path`` (None if none came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in demo.sidecars["backend"].request_records():
            if record.get("path") == path:
                return dict(record)
        time.sleep(0.05)
    return None


def check_paths(demo: Any) -> bool:
    """(d): GET /orders/7 is served, GET /admin/users gets 403 and never reaches the app."""
    say = demo.say
    say("\n(d) per-request policy on an HTTP listener: the same frontend, two paths")
    port = demo.ports["frontend-http-out"]
    allowed = http_get(port, "/orders/7")
    served_before = demo.backend_app.served
    denied = http_get(port, "/admin/users")
    record = _request_record(demo, "/admin/users")
    seen = _request_record(demo, "/orders/7")
    say(f"    GET /orders/7    -> HTTP {allowed.status or allowed.error}: {allowed.body.strip()}")
    say(f"    GET /admin/users -> HTTP {denied.status or denied.error}: {denied.body.strip()}")
    if seen is not None:
        say(f"    backend sidecar: /orders/7 allowed by rule {seen['rule']!r} for {seen['peer_id']}"
            f" over {seen['http_version']}")
    if record is not None:
        say(f"    backend sidecar: /admin/users denied by rule {record['rule']!r} (reason {record['reason']})")
    ok = (allowed.status == 200 and "you asked for /orders/7" in allowed.body and denied.status == 403
          and record is not None and record["rule"] == "no-admin" and demo.backend_app.served == served_before)
    say(f"    the backend app saw {demo.backend_app.served - served_before} request(s) for /admin/users")
    say(f"    => {'PASS' if ok else 'FAIL'}: one request allowed and one denied, by path")
    return ok
