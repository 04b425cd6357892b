"""The speed goals of the compiled engine, checked against one run's medians.

Each goal is a ratio with a bound; a missed goal reports how far it is from
the bound, so RESULTS.md can say "by how much" without hand arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench.stats import Summary, ratio

COMPILED = ("sidecar-trio", "sidecar-uvloop")


@dataclass(frozen=True, slots=True)
class Goal:
    """variant's `key` over base's `key` must be >= bound (or <= when `at_most`).

    `cost_key` names the CPU-per-unit figure of the same work: base's cost
    over the variant's is the ratio the goal would show on an idle machine
    where CPU is the only limit, and it holds steady when the machine is noisy.
    """

    text: str
    key: str
    bound: float
    base: str = "haproxy"
    at_most: bool = False
    cost_key: str | None = None


GOALS: tuple[Goal, ...] = (
    Goal("keep-alive request rate >= 1.0x haproxy", "ka_rps", 1.0, cost_key="cpu_req_us_pair"),
    Goal("keep-alive p99 latency <= 1.2x haproxy", "ka_p99_ms", 1.2, at_most=True),
    Goal("new-connection rate >= 2.0x haproxy", "cc_rps", 2.0, cost_key="cpu_conn_us_pair"),
    Goal("handshakes/s (s_time, server alone) >= 2.0x haproxy", "hs_rate", 2.0, cost_key="cpu_hs_us_server"),
    Goal("bulk throughput >= 1.0x haproxy", "bulk_mbs", 1.0, cost_key="cpu_gib_s_pair"),
    Goal("memory per idle connection <= 2x haproxy", "rss_conn_kib_pair", 2.0, at_most=True),
    Goal("request rate >= 3x the pure-Python engine", "ka_rps", 3.0, base="sidecar-py",
         cost_key="cpu_req_us_pair"),
    Goal("bulk throughput >= 3x the pure-Python engine", "bulk_mbs", 3.0, base="sidecar-py",
         cost_key="cpu_gib_s_pair"),
)


def check(summaries: Mapping[str, Summary]) -> list[dict[str, object]]:
    """One row per (goal, compiled variant) that has both figures."""
    rows: list[dict[str, object]] = []
    for goal in GOALS:
        for variant in COMPILED:
            r = ratio(summaries, variant, goal.base, goal.key)
            if r is None:
                continue
            met = r <= goal.bound if goal.at_most else r >= goal.bound
            # "by how much": the factor still to gain (or to shed) to reach the bound.
            short = goal.bound / r if not goal.at_most else r / goal.bound
            cost = ratio(summaries, goal.base, variant, goal.cost_key) if goal.cost_key else None
            rows.append({"goal": goal.text, "variant": variant, "ratio": r, "bound": goal.bound,
                         "met": met, "factor_short": None if met else short, "by_cpu_cost": cost})
    return rows
