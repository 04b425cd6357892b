"""Rotation arithmetic: half-life refresh, expiry, staleness."""

from __future__ import annotations

from proxy.identity import rotation


def test_refresh_is_due_at_half_life() -> None:
    assert rotation.refresh_at(1000, 2000) == 1500


def test_expiry_is_exclusive_of_not_after() -> None:
    assert rotation.seconds_to_expiry(2000, 1990) == 10
    assert not rotation.is_expired(2000, 1999.999)
    assert rotation.is_expired(2000, 2000)


def test_stale_once_three_quarters_of_the_lifetime_passed_without_renewal() -> None:
    assert not rotation.is_stale(1000, 2000, 1700)
    assert rotation.is_stale(1000, 2000, 1750)


def test_describe_expiry_for_operators() -> None:
    assert rotation.describe_expiry(1000 + 3723, 1000) == "expires in 1h02m03s"
    assert rotation.describe_expiry(1000, 1012) == "expired 12s ago"
    assert rotation.describe_expiry(1090, 1000) == "expires in 1m30s"


def test_zero_lifetime_is_due_immediately() -> None:
    assert rotation.lifetime(5, 1) == 0
    assert rotation.refresh_at(5, 5) == 5
