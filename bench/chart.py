"""A PNG bar chart of every variant's ratio to haproxy (optional: matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bench.metrics import BY_KEY, RATIO_KEYS
from bench.stats import Summary, ratio


def draw(summaries: Mapping[str, Summary], path: Path) -> str | None:
    """Write the chart; return why it was not drawn, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install matplotlib): no chart"
    names = [n for n in summaries if n != "haproxy"]
    if "haproxy" not in summaries or not names:
        return "no haproxy figures to compare with: no chart"
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [ratio(summaries, name, "haproxy", k) or 0.0 for k in RATIO_KEYS]
        ax.bar([x + i * width for x in range(len(RATIO_KEYS))], vals, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(RATIO_KEYS))])
    ax.set_xticklabels([f"{BY_KEY[k].label}\n({'higher' if BY_KEY[k].higher_better else 'lower'} is better)"
                        for k in RATIO_KEYS], fontsize=8)
    ax.set_ylabel("ratio to the haproxy pair (median)")
    ax.set_title("spiffe-sidecar bench: each variant / haproxy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
