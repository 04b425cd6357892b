"""A copy of the interpreter (a workload with its own unix:path) imports what the test run imports.

In a virtualenv, ``realpath(sys.executable)`` is the base interpreter: a copy
of it sees none of the venv's packages unless ``interpreter_env`` says where
they are. This is what made two tests fail for every user who followed the
README in a venv.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from proxy.demo.interpreter import copy_interpreter, interpreter_env


def test_a_copied_interpreter_imports_the_runs_own_packages_and_this_tree(tmp_path: Path) -> None:
    copy = copy_interpreter(tmp_path / "python-workload")
    code = "import grpc, jwt, spiffe, trio, proxy; print(proxy.__file__)"
    done = subprocess.run([str(copy), "-c", code], env=interpreter_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().parent == Path(__import__("proxy").__file__).resolve().parent
