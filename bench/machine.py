"""What the figures were measured on: machine, kernel and tool versions.

Recorded with every run, since a ratio only means something next to the
OpenSSL and proxy versions it was measured with.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _first_line(argv: list[str], needle: str = "") -> str | None:
    """The first output line of argv containing `needle` (stdout then stderr)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in (r.stdout + "\n" + r.stderr).splitlines() if ln.strip()]
    return next((ln for ln in lines if needle in ln), None)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sidecar_engine() -> str | None:
    """Which OpenSSL the compiled engine links, if it can say."""
    code = ("import proxy._fastpath as f\n"
            "print(getattr(f, 'OPENSSL_VERSION', None) or getattr(f, 'openssl_version', lambda: 'built')())")
    return _first_line([sys.executable, "-c", code])


def describe() -> dict[str, object]:
    """Machine and versions, for the JSON and RESULTS.md."""
    return {
        "nproc": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
        "python": sys.version.split()[0],
        "versions": {
            "haproxy": _first_line(["haproxy", "-v"]), "nginx": _first_line(["nginx", "-v"]),
            "stunnel": _first_line(["stunnel4", "-version"], "stunnel 5") or _first_line(["stunnel", "-version"], "stunnel"),
            "openssl": _first_line(["openssl", "version"]), "wrk": _first_line(["wrk", "--version"]),
            "spiffe-sidecar": _first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
            "sidecar compiled engine": sidecar_engine(),
        },
    }
