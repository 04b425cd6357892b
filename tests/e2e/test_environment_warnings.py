"""A mistyped SPIFFE_SIDECAR_* variable is named at start-up by a real `spiffe-sidecar run`, never ignored silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import proxy

SPIFFE_SIDECAR = Path(sys.executable).parent / "spiffe-sidecar"


def _run(tmp_path: Path, config: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sidecar.yaml").write_text(config)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    base["PYTHONPATH"] = str(Path(proxy.__file__).resolve().parents[1])  # this tree's package, not another
    return subprocess.run([str(SPIFFE_SIDECAR), "run", "-c", str(tmp_path / "sidecar.yaml")], capture_output=True,
                          text=True, timeout=60, env={**base, **env})


def test_run_warns_about_a_mistyped_variable_naming_it_and_the_known_ones(tmp_path: Path) -> None:
    config = f"identity: {{workload_api: unix://{tmp_path}/no-agent.sock}}\nfirst_svid_timeout: 1s\n"
    done = _run(tmp_path, config, SPIFFE_SIDECAR_RUNTIM="uvloop", SPIFFE_SIDECAR_NO_EXTENSIONS="1",
                SPIFFE_SIDECAR_IPTABLES_PROXY_UID="1337")
    assert done.returncode == 1, done.stderr  # no SVID within 1s: it did start, and said so first
    warnings = [line for line in done.stderr.splitlines() if "unknown environment variable" in line]
    assert len(warnings) == 1, done.stderr
    assert "WARNING" in warnings[0] and "SPIFFE_SIDECAR_RUNTIM is ignored (did you mean SPIFFE_SIDECAR_RUNTIME?)" \
        in warnings[0]
    for known in ("SPIFFE_SIDECAR_NO_EXTENSIONS", "SPIFFE_SIDECAR_REQUIRE_EXTENSIONS", "SPIFFE_SIDECAR_RELAY_THREAD",
                  "SPIFFE_SIDECAR_FIRST_SVID_TIMEOUT", "SPIFFE_SIDECAR_LIMITS_IDLE_TIMEOUT"):
        assert known in warnings[0]


def test_the_warning_comes_before_a_config_error_the_typo_caused(tmp_path: Path) -> None:
    done = _run(tmp_path, "runtime: trio\n", SPIFFE_SIDECAR_IDENTITY_WORKLAOD_API="unix:///run/spire/agent.sock")
    assert done.returncode == 2, done.stderr
    assert "SPIFFE_SIDECAR_IDENTITY_WORKLAOD_API is ignored (did you mean SPIFFE_SIDECAR_IDENTITY_WORKLOAD_API?)" \
        in done.stderr
    assert done.stderr.index("unknown environment variable") < done.stderr.index("no SVID source")
