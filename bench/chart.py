"""A PNG chart of every proxy pair's ratios to haproxy (optional: matplotlib).

Two panels: what users feel (rates, p99, memory per connection) and what the
proxies spend (CPU per unit of work). `direct` is left out: it has no proxy
cost and its rates would flatten every other bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.metrics import BY_KEY, COST_RATIO_KEYS, RATIO_KEYS
from bench.stats import Summary, ratio


def _panel(ax: Any, summaries: Mapping[str, Summary], names: Sequence[str], keys: Sequence[str],
           title: str) -> None:
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [ratio(summaries, name, "haproxy", k) or 0.0 for k in keys]
        bars = ax.bar([x + i * width for x in range(len(keys))], vals, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v else "" for v in vals], fontsize=6, rotation=90, padding=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(keys))])
    ax.set_xticklabels([f"{BY_KEY[k].label}\n({'higher' if BY_KEY[k].higher_better else 'lower'} is better)"
                        for k in keys], fontsize=8)
    ax.set_ylabel("ratio to haproxy (median)")
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.15)


def draw(summaries: Mapping[str, Summary], path: Path) -> str | None:
    """Write the chart; return why it was not drawn, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install matplotlib): no chart"
    names = [n for n in summaries if n not in ("haproxy", "direct")]
    if "haproxy" not in summaries or not names:
        return "no haproxy figures to compare with: no chart"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8))
    _panel(top, summaries, names, RATIO_KEYS, "rates, latency, memory: each pair / haproxy pair")
    _panel(bottom, summaries, names, COST_RATIO_KEYS, "CPU per unit of work: each pair / haproxy pair")
    top.legend(fontsize=8, ncol=len(names))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
