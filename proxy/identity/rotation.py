"""When an SVID should be renewed, how long it has left, whether its source went quiet.

Pure functions of (not_before, not_after, now): the agent rotates X.509-SVIDs
at half their lifetime (SPIRE's default, rotationutil.go), so a healthy
stream delivers a new SVID around the half-life. An SVID still in use well
past its half-life means the stream is stale (envoy#35216: alert before
it expires, not after).
"""

from __future__ import annotations

#: Fraction of the lifetime after which a renewal is due (SPIRE's default).
REFRESH_FRACTION = 0.5
#: Past this fraction of the lifetime without renewal, the source is stale.
STALE_FRACTION = 0.75


def lifetime(not_before: float, not_after: float) -> float:
    """Total validity in seconds (never negative)."""
    return max(0.0, not_after - not_before)


def refresh_at(not_before: float, not_after: float, fraction: float = REFRESH_FRACTION) -> float:
    """The instant (Unix seconds) a renewal becomes due."""
    return not_before + lifetime(not_before, not_after) * fraction


def seconds_to_expiry(not_after: float, now: float) -> float:
    """Seconds left before ``not_after``; negative once expired."""
    return not_after - now


def is_expired(not_after: float, now: float) -> bool:
    """True at or after ``not_after`` (an SVID is valid up to, not including, it)."""
    return now >= not_after


def is_stale(not_before: float, not_after: float, now: float, fraction: float = STALE_FRACTION) -> bool:
    """True when the SVID in use should long have been replaced.

    The source delivered nothing new although the SVID is past ``fraction``
    of its lifetime: an operator should look at the Workload API stream.
    """
    return now >= refresh_at(not_before, not_after, fraction)


def describe_expiry(not_after: float, now: float) -> str:
    """"expires in 1h02m03s" / "expired 12s ago", for operators."""
    left = seconds_to_expiry(not_after, now)
    text = _duration(abs(left))
    return f"expires in {text}" if left > 0 else f"expired {text} ago"


def _duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
