"""Pending-handshake admission (issue 11.5): pure bookkeeping, limits passed per call."""

from __future__ import annotations

from proxy.connection.pending import FLOOD_MARK, PendingHandshakes
from proxy.errors import AdmissionRefusal


def test_one_source_is_capped_and_others_still_get_in() -> None:
    gate = PendingHandshakes()
    assert [gate.enter("10.0.0.2", 100, 3) for _ in range(4)] == [None, None, None,
                                                                   AdmissionRefusal.PENDING_HANDSHAKES_PER_SOURCE]
    assert gate.enter("10.0.0.1", 100, 3) is None
    assert gate.total == 4 and gate.by_source == {"10.0.0.2": 3, "10.0.0.1": 1}


def test_the_listener_total_is_capped_across_sources() -> None:
    gate = PendingHandshakes()
    assert [gate.enter(f"10.0.0.{n}", 2, 10) for n in range(3)] == [None, None, AdmissionRefusal.PENDING_HANDSHAKES]


def test_leaving_frees_the_slot_and_forgets_idle_sources() -> None:
    gate = PendingHandshakes()
    gate.enter("a", 1, 1)
    assert gate.enter("b", 1, 1) is AdmissionRefusal.PENDING_HANDSHAKES
    gate.leave("a")
    assert gate.total == 0 and gate.by_source == {} and gate.enter("b", 1, 1) is None


def test_the_end_of_a_flood_is_reported_once() -> None:
    gate = PendingHandshakes()
    for n in range(FLOOD_MARK * 2):
        gate.enter(str(n), 10_000, 10)
    ends = [gate.leave(str(n)) for n in range(FLOOD_MARK * 2)]
    assert ends.count(True) == 1
    small = PendingHandshakes()
    small.enter("a", 10, 10)
    assert small.leave("a") is False  # a handful pending is no flood
