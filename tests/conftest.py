"""Shared fixtures. Support code lives in tests/support/ (importable as `support`)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
