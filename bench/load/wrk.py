"""Run wrk against a URL and return its summary as numbers.

One wrk thread: on a 2-core machine every extra load thread is a core taken
from the proxies being measured. A Lua `done` hook prints the summary as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = Path(__file__).with_name("report.lua")


@dataclass(frozen=True, slots=True)
class WrkResult:
    """requests/s, latency percentiles in ms, and the error count wrk saw."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def missing() -> str | None:
    """Why wrk cannot run here, or None."""
    return None if shutil.which("wrk") else "wrk not installed: apt-get install wrk"


def run_wrk(url: str, *, seconds: float, connections: int, close: bool) -> WrkResult:
    """Load `url` for `seconds`; with `close`, every request opens a new
    connection (`Connection: close`), so every request costs a handshake."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
            "-s", str(_SCRIPT)]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk produced no summary (rc={out.returncode}): {out.stderr.strip()[-300:]}")
    d = json.loads(line.split(" ", 1)[1])
    errors = d["err_connect"] + d["err_read"] + d["err_write"] + d["err_status"] + d["err_timeout"]
    return WrkResult(requests=d["requests"], rps=d["requests"] / (d["duration_us"] / 1e6),
                     p50_ms=d["p50_us"] / 1000, p99_ms=d["p99_us"] / 1000, errors=errors)
