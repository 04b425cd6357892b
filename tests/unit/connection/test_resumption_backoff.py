"""The book of upstreams that refused a resumed session (issue 10.3): pure, ``now`` in."""

from __future__ import annotations

from proxy.connection.resumption import ResumptionBackoff


def test_an_upstream_is_offered_sessions_until_it_refuses_one() -> None:
    book = ResumptionBackoff(initial=60, maximum=600)
    assert book.may_offer("a:1", 0.0) and not book.backing_off
    assert book.refused("a:1", 100.0) == 60
    assert not book.may_offer("a:1", 159.0) and book.may_offer("a:1", 160.0)
    assert book.may_offer("b:1", 100.0)  # only the refusing upstream


def test_each_refusal_doubles_the_backoff_up_to_the_maximum() -> None:
    book = ResumptionBackoff(initial=60, maximum=200)
    assert [book.refused("a:1", t) for t in (0, 100, 300, 600)] == [60, 120, 200, 200]


def test_a_successful_resumption_forgets_the_backoff() -> None:
    book = ResumptionBackoff(initial=60)
    book.refused("a:1", 0.0)
    book.resumed("a:1")
    assert book.may_offer("a:1", 1.0) and book.refused("a:1", 2.0) == 60


def test_the_book_is_bounded() -> None:
    book = ResumptionBackoff(initial=60, max_upstreams=2)
    for key in ("a", "b", "c"):
        book.refused(key, 0.0)
    assert book.may_offer("a", 1.0) and not book.may_offer("c", 1.0)
