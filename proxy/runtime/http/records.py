"""One access-log line per HTTP request, and the request metrics derived from it.

On ``protocol: http`` listeners every request leaves a ``RequestRecord`` on
top of the connection's own record: method, normalized path, status, peer,
deciding rule, decision, reason, bytes, duration and, on HTTP/2, the stream
id. The path is a log field only: metrics are labelled by listener, rule,
decision and status class (``2xx``...), never by path or peer, so their
label sets stay bounded whatever clients send.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from prometheus_client import CollectorRegistry, Counter

RequestSink = Callable[["RequestRecord"], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """The outcome of one HTTP request on an HTTP listener.

    ``decision`` is allow, deny or reject (refused before the policy:
    malformed, bad path, head too large); ``reason`` a DenyReason or
    RequestRejection value.
    """

    listener: str
    direction: str
    method: str
    path: str
    status: int
    peer_id: str | None
    rule: str | None
    decision: str
    reason: str | None
    bytes_in: int
    bytes_out: int
    duration: float
    http_version: str
    stream_id: int | None = None
    upstream: str | None = None

    @property
    def status_class(self) -> str:
        """``2xx``, ``4xx``... (``0xx`` when no response was sent)."""
        return f"{self.status // 100}xx"

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "event": "request", "listener": self.listener, "direction": self.direction, "method": self.method,
            "path": self.path, "status": self.status, "peer_id": self.peer_id, "rule": self.rule,
            "decision": self.decision, "reason": self.reason, "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out, "duration": round(self.duration, 6), "http_version": self.http_version}
        if self.stream_id is not None:
            data["stream_id"] = self.stream_id
        if self.upstream is not None:
            data["upstream"] = self.upstream
        return json.dumps(data, separators=(",", ":"))


class HttpMetrics:
    """Request counters and pool figures, in the sidecar's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "spiffe_sidecar_http"
        self.requests = Counter(f"{p}_requests", "HTTP requests, by listener, rule, decision and status class",
                                ["listener", "rule", "decision", "reason", "status_class"], registry=registry)
        self.pool_handshakes = Counter(f"{p}_pool_handshakes", "mTLS handshakes made by an outbound HTTP pool",
                                       ["listener"], registry=registry)
        self.pool_reuses = Counter(f"{p}_pool_reuses", "Requests sent on an already open pooled mTLS connection",
                                   ["listener"], registry=registry)

    def observe(self, record: RequestRecord) -> None:
        self.requests.labels(record.listener, record.rule or "", record.decision, record.reason or "",
                             record.status_class).inc()


def request_sink(target: str, metrics: HttpMetrics | None) -> RequestSink:
    """Where request records go: the access log's target (JSON lines), plus metrics when on."""
    stream: TextIO | None
    if target == "off":
        stream = None
    elif target in ("stdout", "-"):
        stream = sys.stdout
    elif target == "stderr":
        stream = sys.stderr
    else:
        stream = Path(target).open("a", encoding="utf-8", buffering=1)

    def write(record: RequestRecord) -> None:
        if stream is not None:
            stream.write(record.to_json() + "\n")
            stream.flush()
        if metrics is not None:
            metrics.observe(record)

    return write


def print_request(record: RequestRecord) -> None:
    """The default sink (tests, a plane built without a sidecar): JSON on stdout."""
    sys.stdout.write(record.to_json() + "\n")
    sys.stdout.flush()
