"""The figures a run reports: key, label, unit, and which way is better.

One catalogue drives the JSON, the Markdown tables and the chart, so a figure
is named the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    """A reported figure. `higher_better` decides how a ratio reads."""

    key: str
    label: str
    unit: str
    higher_better: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("ka_rps", "keep-alive", "req/s"),
    Metric("ka_p50_ms", "keep-alive p50", "ms", higher_better=False),
    Metric("ka_p99_ms", "keep-alive p99", "ms", higher_better=False),
    Metric("cc_rps", "new connections", "conn/s"),
    Metric("cc_p99_ms", "new-conn p99", "ms", higher_better=False),
    Metric("hs_rate", "handshakes (s_time)", "hs/s"),
    Metric("bulk_mbs", "bulk", "MB/s"),
    Metric("cpu_req_us_client", "CPU/req client", "µs", higher_better=False),
    Metric("cpu_req_us_server", "CPU/req server", "µs", higher_better=False),
    Metric("cpu_req_us_pair", "CPU/req pair", "µs", higher_better=False),
    Metric("cpu_conn_us_client", "CPU/new conn client", "µs", higher_better=False),
    Metric("cpu_conn_us_server", "CPU/new conn server", "µs", higher_better=False),
    Metric("cpu_conn_us_pair", "CPU/new conn pair", "µs", higher_better=False),
    Metric("cpu_hs_us_server", "CPU/handshake server", "µs", higher_better=False),
    Metric("cpu_gib_s_client", "CPU/GiB client", "s", higher_better=False),
    Metric("cpu_gib_s_server", "CPU/GiB server", "s", higher_better=False),
    Metric("cpu_gib_s_pair", "CPU/GiB pair", "s", higher_better=False),
    Metric("rss_idle_mib_client", "RSS idle client", "MiB", higher_better=False),
    Metric("rss_idle_mib_server", "RSS idle server", "MiB", higher_better=False),
    Metric("rss_conn_kib_client", "RSS/conn client", "KiB", higher_better=False),
    Metric("rss_conn_kib_server", "RSS/conn server", "KiB", higher_better=False),
    Metric("rss_conn_kib_pair", "RSS/conn pair", "KiB", higher_better=False),
)
BY_KEY = {m.key: m for m in METRICS}

# The figures compared across variants (ratio tables and the chart).
RATIO_KEYS = ("ka_rps", "ka_p99_ms", "cc_rps", "hs_rate", "bulk_mbs", "rss_conn_kib_pair")
# The same comparisons by CPU spent per unit of work (lower is better).
COST_RATIO_KEYS = ("cpu_req_us_pair", "cpu_conn_us_pair", "cpu_hs_us_server", "cpu_gib_s_pair")
