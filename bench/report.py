"""Render a run as Markdown: absolute figures, ratios, costs, goals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.metrics import BY_KEY, COST_RATIO_KEYS, RATIO_KEYS
from bench.stats import Summary, ratio

MAIN_KEYS = ("ka_rps", "ka_p50_ms", "ka_p99_ms", "cc_rps", "cc_p99_ms", "hs_rate", "bulk_mbs")
COST_KEYS = ("cpu_req_us_client", "cpu_req_us_server", "cpu_req_us_pair", "cpu_conn_us_client",
             "cpu_conn_us_server", "cpu_conn_us_pair", "cpu_hs_us_server", "cpu_gib_s_client", "cpu_gib_s_server",
             "cpu_gib_s_pair")
MEM_KEYS = ("rss_idle_mib_client", "rss_idle_mib_server", "rss_conn_kib_client", "rss_conn_kib_server",
            "rss_conn_kib_pair")


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell(summary: Summary, key: str) -> str:
    """'median (min–max)', or '–' when the figure was not measured."""
    s = summary.get(key)
    if s is None:
        return "–"
    if s["n"] < 2 or s["min"] == s["max"]:
        return _num(s["median"])
    return f"{_num(s['median'])} ({_num(s['min'])}–{_num(s['max'])})"


def table(summaries: Mapping[str, Summary], keys: Sequence[str]) -> list[str]:
    """A variants-by-figures Markdown table."""
    head = "| variant | " + " | ".join(f"{BY_KEY[k].label} ({BY_KEY[k].unit})" for k in keys) + " |"
    rows = [head, "|---" * (len(keys) + 1) + "|"]
    for name, summary in summaries.items():
        rows.append(f"| {name} | " + " | ".join(cell(summary, k) for k in keys) + " |")
    return rows


def ratio_table(summaries: Mapping[str, Summary]) -> list[str]:
    """Each variant's medians over haproxy's and over direct's."""
    cols = [(k, base) for k in RATIO_KEYS for base in ("haproxy", "direct")
            if not (base == "direct" and k in ("hs_rate", "rss_conn_kib_pair"))]
    head = "| variant | " + " | ".join(f"{BY_KEY[k].label} ×{base}" for k, base in cols) + " |"
    rows = [head, "|---" * (len(cols) + 1) + "|"]
    for name in summaries:
        vals = [ratio(summaries, name, base, k) for k, base in cols]
        rows.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:.2f}x" for v in vals) + " |")
    return rows


def cost_ratio_table(summaries: Mapping[str, Summary]) -> list[str]:
    """CPU per unit of work over haproxy's (lower is better; 0.5x = half the CPU)."""
    head = "| variant | " + " | ".join(f"{BY_KEY[k].label} ×haproxy" for k in COST_RATIO_KEYS) + " |"
    rows = [head, "|---" * (len(COST_RATIO_KEYS) + 1) + "|"]
    for name in summaries:
        vals = [ratio(summaries, name, "haproxy", k) for k in COST_RATIO_KEYS]
        if any(v is not None for v in vals):
            rows.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:.2f}x" for v in vals) + " |")
    return rows


def goal_table(goals: Sequence[Mapping[str, Any]]) -> list[str]:
    """Goals met or missed, with the factor still missing, and the same ratio
    judged by CPU per unit of work (base's CPU over ours)."""
    rows = ["| goal | variant | measured | verdict | by CPU cost |", "|---|---|---|---|---|"]
    for g in goals:
        verdict = "met" if g["met"] else f"missed: {g['factor_short']:.2f}x short"
        cost = "–" if g.get("by_cpu_cost") is None else f"{g['by_cpu_cost']:.2f}x"
        rows.append(f"| {g['goal']} | {g['variant']} | {g['ratio']:.2f}x | {verdict} | {cost} |")
    return rows


def render(summaries: Mapping[str, Summary], goals: Sequence[Mapping[str, Any]],
           skipped: Mapping[str, str], errors: Mapping[str, Sequence[str]]) -> str:
    """The whole Markdown report of one run."""
    out = ["### Throughput and latency (median (min–max) over rounds)", "", *table(summaries, MAIN_KEYS), ""]
    if "haproxy" in summaries or "direct" in summaries:
        out += ["### Ratios (medians)", "", *ratio_table(summaries), ""]
    out += ["### CPU cost per unit of work (from /proc utime+stime)", "", *table(summaries, COST_KEYS), ""]
    if "haproxy" in summaries:
        out += ["### CPU cost ratios (lower is better)", "", *cost_ratio_table(summaries), ""]
    out += ["### Memory", "", *table(summaries, MEM_KEYS), ""]
    if goals:
        out += ["### Goals", "", *goal_table(goals), ""]
    if skipped:
        out += ["### Skipped", ""] + [f"- {name}: {why}" for name, why in skipped.items()] + [""]
    errs = [f"- {name}: {e}" for name, es in errors.items() for e in es]
    for name, summary in summaries.items():
        for key, what in (("ka_errors", "keep-alive"), ("cc_errors", "new-connection")):
            if summary.get(key, {}).get("max", 0) > 0:
                errs.append(f"- {name}: wrk saw up to {summary[key]['max']:.0f} socket errors per {what} phase")
    if errs:
        out += ["### Errors during the run", "", *errs, ""]
    return "\n".join(out)
