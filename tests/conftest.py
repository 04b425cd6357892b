"""Shared fixtures. Support code lives in tests/support/ (importable as `support`)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import time

import pytest


@pytest.fixture(autouse=True)
def _refresh_wall_clock_now(request: pytest.FixtureRequest) -> None:
    """Give modules that opt in (NOW_FROM_WALL_CLOCK = True) a fresh `NOW` per test.

    Test modules are imported at collection, which can be many minutes before
    a test runs in a full suite, while the certificates a test mints are
    stamped at run time: an import-time NOW would fall before their NotBefore.
    """
    module = request.module
    if getattr(module, "NOW_FROM_WALL_CLOCK", False):
        module.NOW = time.time()
