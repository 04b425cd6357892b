"""The access log: one line per connection, from its ConnectionRecord.

JSON (one object per line, stable keys: ``ConnectionRecord.to_json``) is for
machines and is the default when the target is not a terminal; the text form
is for a person watching ``spiffe-sidecar run`` in a terminal (``format:
auto``) or who asks for it (``format: text``). Both carry the same facts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from proxy.config.model import LogFormat
from proxy.connection.close import ConnectionRecord
from proxy.connection.reauth import ReauthRecord

Sink = Callable[[ConnectionRecord], None]
ReauthSink = Callable[[ReauthRecord], None]


def format_text(record: ConnectionRecord) -> str:
    """One human-readable line: when, where, who, what was decided, how it ended, how much moved."""
    when = time.strftime("%H:%M:%S", time.localtime(record.start))
    peer = record.peer_id or ("plaintext" if record.plaintext else "-")
    decision = record.decision.value if record.decision is not None else "-"
    if record.rule:
        decision += f" ({record.rule})"
    where = record.listener if record.original_port is None else f"{record.listener}:{record.original_port}"
    parts = [when, where, record.direction.value, peer, decision, record.close_reason.value]
    if record.reason is not None:
        parts.append(f"reason={record.reason.value}")
    parts.append(f"in={record.bytes_in}B out={record.bytes_out}B {record.duration * 1000:.1f}ms")
    if record.tls_version:
        parts.append(f"{record.tls_version} {record.cipher or ''}".rstrip())
    if record.detail:
        parts.append(f"- {record.detail}")
    return " ".join(parts)


def format_reauth_text(record: ReauthRecord) -> str:
    """One human-readable line for a re-authentication of a live connection."""
    when = time.strftime("%H:%M:%S", time.localtime(record.time))
    parts = [when, record.listener, "reauth", record.peer_id or record.previous_peer_id or "-", record.outcome.value]
    if record.reason:
        parts.append(f"reason={record.reason}")
    if record.not_after:
        parts.append("until " + time.strftime("%H:%M:%S", time.localtime(record.not_after)))
    if record.detail:
        parts.append(f"- {record.detail}")
    return " ".join(parts)


def open_sinks(target: str, fmt: LogFormat = LogFormat.AUTO) -> tuple[Sink, ReauthSink]:
    """Connection records and re-authentication records, to the same target in the same format."""
    if target == "off":
        return (lambda record: None), (lambda record: None)
    stream = _open_stream(target)
    text = fmt is LogFormat.TEXT or (fmt is LogFormat.AUTO and _isatty(stream))

    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    if text:
        return (lambda r: write(format_text(r))), (lambda r: write(format_reauth_text(r)))
    return (lambda r: write(r.to_json())), (lambda r: write(r.to_json()))


def _open_stream(target: str) -> TextIO:
    if target in ("stdout", "-"):
        return sys.stdout
    if target == "stderr":
        return sys.stderr
    return Path(target).open("a", encoding="utf-8", buffering=1)


def open_sink(target: str, fmt: LogFormat = LogFormat.AUTO) -> Sink:
    """Where records go: ``stdout`` (default), ``stderr``, ``off``, or a file path (appended).

    ``auto`` writes text when the target is a terminal and JSON otherwise.
    """
    if target == "off":
        return lambda record: None
    stream: TextIO
    if target in ("stdout", "-"):
        stream = sys.stdout
    elif target == "stderr":
        stream = sys.stderr
    else:
        stream = Path(target).open("a", encoding="utf-8", buffering=1)
    text = fmt is LogFormat.TEXT or (fmt is LogFormat.AUTO and _isatty(stream))
    render = format_text if text else ConnectionRecord.to_json

    def write(record: ConnectionRecord) -> None:
        stream.write(render(record) + "\n")
        stream.flush()

    return write


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
