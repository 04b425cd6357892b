"""Fixtures of the data-plane scenario suite: one suite, every runtime x engine combination.

``combo`` parametrizes a test over (runtime, engine) = COMBOS; fastpath
combinations are skipped (not failed) when the extension is not built, and
a test that only needs one combination takes ``one_combo``.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator

import pytest

from support import pki
from support.combos import combo_params


@pytest.fixture(params=combo_params())
def combo(request: pytest.FixtureRequest) -> tuple[str, str]:
    runtime, engine = request.param
    return runtime, engine


@pytest.fixture(scope="module", params=combo_params())
def module_combo(request: pytest.FixtureRequest) -> tuple[str, str]:
    runtime, engine = request.param
    return runtime, engine


@pytest.fixture(scope="session")
def ca() -> pki.Ca:
    return pki.make_ca("example.org")


@pytest.fixture(scope="session")
def other_ca() -> pki.Ca:
    """The CA of a federated trust domain (other.org)."""
    return pki.make_ca("other.org")


@pytest.fixture(scope="session")
def rogue_ca() -> pki.Ca:
    """A CA that calls itself example.org but is in no bundle."""
    return pki.make_ca("example.org")


@pytest.fixture(scope="session")
def expired_kwargs() -> Iterator[dict[str, object]]:
    now = dt.datetime.now(dt.timezone.utc)
    yield {"not_before": now - dt.timedelta(hours=2), "lifetime": dt.timedelta(hours=1)}
