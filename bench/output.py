"""Write a run's results: results.json, results.md and ratios.png under --out."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from bench import chart, goals, report
from bench.machine import describe
from bench.measure import Settings
from bench.orchestrate import RunResult
from bench.stats import Summary, summarise


def summaries_of(result: RunResult) -> dict[str, Summary]:
    """Per variant: each figure summarised over the rounds that produced it."""
    return {name: summarise(rounds) for name, rounds in result.rounds.items()}


def build(result: RunResult, settings: Settings, command: str, rounds: int) -> dict[str, Any]:
    """The JSON document: everything needed to re-derive every table."""
    summaries = summaries_of(result)
    return {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "rounds": rounds, "settings": settings.__dict__ if hasattr(settings, "__dict__")
        else {f: getattr(settings, f) for f in settings.__slots__},
        "machine": describe(),
        "variants": {name: {"rounds": result.rounds[name], "summary": summaries[name], "errors": result.errors.get(name, [])}
                     for name in result.rounds},
        "skipped": result.skipped,
        "goals": goals.check(summaries),
    }


def write(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the three files; return their paths (the chart may be absent)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {name: v["summary"] for name, v in doc["variants"].items()}
    md = report.render(summaries, doc["goals"], doc["skipped"],
                       {n: v["errors"] for n, v in doc["variants"].items()})
    m = doc["machine"]
    header = (f"Run {doc['when']} on {m['nproc']} x {m['cpu']}, kernel {m['kernel']}; "
              f"{doc['rounds']} rounds; `{doc['command']}`\n\n")
    paths = [out_dir / "results.json", out_dir / "results.md"]
    paths[0].write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    paths[1].write_text(header + md)
    why = chart.draw(summaries, out_dir / "ratios.png")
    if why is None:
        paths.append(out_dir / "ratios.png")
    else:
        print(why)
    return paths
