"""A private copy of this Python interpreter that still imports this installation.

The agent tells workloads apart by what it attests (``unix:path``,
``unix:sha256``), and on one machine under one uid the only thing a test or
the demo can vary is the executable: so each workload runs from its own copy
of the interpreter. A copy of ``realpath(sys.executable)`` is the *base*
interpreter, though: inside a virtualenv it would not see the venv's
packages (no ``pyvenv.cfg`` beside it), and fail with ``No module named
'grpc'``. ``interpreter_env`` puts this tree's ``proxy`` and every
site-packages directory of the running interpreter on ``PYTHONPATH``, so a
copy imports exactly what the caller imports, in or out of a venv.
"""

from __future__ import annotations

import os
import shutil
import site
import sys
from pathlib import Path

import proxy


def copy_interpreter(target: str | Path) -> Path:
    """Copy the real interpreter binary to ``target`` (mode kept); run it with ``interpreter_env()``."""
    path = Path(target)
    shutil.copy2(os.path.realpath(sys.executable), path)
    return path


def interpreter_env(extra: dict[str, str] | None = None, *, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an interpreter copy (or any child Python) needs to import what we import.

    Args:
        extra: variables to set on top.
        base: the environment to start from (default: ``os.environ``).
    """
    env = dict(os.environ if base is None else base)
    paths = [str(Path(proxy.__file__).resolve().parent.parent), *site.getsitepackages()]
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and os.path.isdir(user_site):
        paths.append(user_site)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env
