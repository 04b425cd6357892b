"""Durations as operators write them: "250ms", "30s", "5m", "1h30m", "2h", or plain seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | int | float) -> float:
    """Return seconds. Raises ValueError naming the input when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 5m, 1h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return float(value)
    text = value.strip()
    pos, total = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 5m, 1h30m")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 5m, 1h30m")
    return total


def format_duration(seconds: float) -> str:
    """The shortest readable form ("90s" -> "1m30s")."""
    if seconds < 1:
        return f"{int(round(seconds * 1000))}ms"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (sec, "s")) if v) or "0s"
