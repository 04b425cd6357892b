"""Admission of connections that have not finished their TLS handshake yet (issue 11.5).

A connection that is still handshaking costs memory and a connection slot
but proves nothing about its peer: an attacker holding idle sockets that
never send a ClientHello used to fill ``max_connections`` and lock every
legitimate client out for as long as it liked. So inbound listeners admit
at most ``limits.max_pending_handshakes`` pending handshakes, and at most
``limits.max_pending_handshakes_per_source`` from one source address; beyond either, a new connection is closed at accept, before
any task or TLS state exists for it. Established connections are not
counted here, so they keep relaying whatever the flood does.

A flood also leaves the heap fragmented after it ends: ``leave`` reports
when a flood (``FLOOD_MARK`` or more pending at once) has subsided (the
count fell below 1/64 of its peak) so the runtime can hand the
freed memory back to the system (glibc malloc_trim). Pure bookkeeping: no
I/O, no clock.
"""

from __future__ import annotations

from proxy.errors import AdmissionRefusal

#: Pending handshakes at once that count as a flood worth trimming the heap after.
FLOOD_MARK = 256


class PendingHandshakes:
    """One listener's connections still handshaking, in total and by source address."""

    __slots__ = ("total", "by_source", "peak")

    def __init__(self) -> None:
        self.total = 0
        self.by_source: dict[str, int] = {}
        self.peak = 0  # highest total since the last flood subsided

    def enter(self, source: str, limit: int, per_source: int) -> AdmissionRefusal | None:
        """Count a new connection from ``source`` in; or say why it is refused (then nothing is counted).

        The limits come with each call: they are the listener's current
        ``limits`` (reloadable), not a copy taken at start.
        """
        if self.total >= limit:
            return AdmissionRefusal.PENDING_HANDSHAKES
        count = self.by_source.get(source, 0)
        if count >= per_source:
            return AdmissionRefusal.PENDING_HANDSHAKES_PER_SOURCE
        self.by_source[source] = count + 1
        self.total += 1
        if self.total > self.peak:
            self.peak = self.total
        return None

    def leave(self, source: str) -> bool:
        """A connection from ``source`` finished handshaking (or ended); True when a flood just subsided."""
        count = self.by_source.get(source, 0)
        if count <= 1:
            self.by_source.pop(source, None)
        else:
            self.by_source[source] = count - 1
        self.total = max(0, self.total - 1)
        if self.peak >= FLOOD_MARK and self.total * 64 < self.peak:
            self.peak = self.total
            return True
        return False
