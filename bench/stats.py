"""Medians with min-max over rounds, and ratios between variants."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

Summary = dict[str, dict[str, float]]


def summarise(rounds: Sequence[Mapping[str, float]]) -> Summary:
    """Per figure: median, min, max and n over the rounds that produced it."""
    keys = sorted({k for r in rounds for k in r})
    out: Summary = {}
    for key in keys:
        values = [r[key] for r in rounds if key in r]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                    "n": float(len(values))}
    return out


def ratio(summaries: Mapping[str, Summary], variant: str, base: str, key: str) -> float | None:
    """median(variant) / median(base) for `key`, or None when either is absent or zero."""
    a = summaries.get(variant, {}).get(key)
    b = summaries.get(base, {}).get(key)
    if a is None or b is None or b["median"] == 0:
        return None
    return a["median"] / b["median"]
