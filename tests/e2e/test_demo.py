"""The README's first command, and SVID rotation under continuous load with the real agent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.demo.scenario import Demo, DemoOptions
from support.combos import engine_params


@pytest.mark.timeout(150)
def test_demo_command_exits_zero_and_leaves_nothing_behind() -> None:
    run = subprocess.run([sys.executable, "-m", "proxy", "demo"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ALL CHECKS PASSED" in run.stdout
    # The HTTP check: the same caller, one request allowed and one denied by its path.
    assert "GET /orders/7    -> HTTP 200" in run.stdout and "GET /admin/users -> HTTP 403" in run.stdout
    workdir = re.search(r"work dir (\S+)", run.stdout)
    assert workdir and not Path(workdir.group(1)).exists()
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", run.stdout)]
    assert pids, f"the demo named no processes, so nothing shows they were stopped:\n{run.stdout}"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("engine", engine_params())
def test_three_rotations_under_continuous_load_fail_no_connection(engine: str, tmp_path: Path) -> None:
    """Backend sidecar on trio, frontend on uvloop: both runtimes rotate under the same load."""
    lines: list[str] = []
    demo = Demo(DemoOptions(svid_ttl=4.0, rotations=3, rotation_timeout=40.0, engine=engine, out=lines.append),
                tmp_path)
    try:
        demo.set_up()
        assert demo.check_rotation_under_load(), "\n".join(lines)
        records = demo.sidecars["frontend"].records() + demo.sidecars["backend"].records()
    finally:
        demo.tear_down()
    assert records
    failed = [r for r in records if r["close_reason"] != "completed"]
    assert not failed, failed[:3]
    assert len({r["tls_version"] for r in records}) == 1
