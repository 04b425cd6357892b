"""Subcommands of the `spiffe-sidecar` CLI (see proxy/cli.py), and what they share: help text, log lines."""

from __future__ import annotations

import logging
import re
import sys
import time

_MARKUP = re.compile(r"``?([^`]+)``?")

#: Every command's diagnostic line: UTC ISO-8601 time with milliseconds, level, logger, message.
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%Y-%m-%dT%H:%M:%S"
LOG_LEVELS = ("debug", "info", "warning", "error")


def plain(doc: str | None) -> str:
    """A module docstring as terminal help text: reST backticks removed (argparse prints text as is)."""
    return _MARKUP.sub(r"\1", doc or "")


def log_handler() -> logging.Handler:
    """A stderr handler writing ``LOG_FORMAT`` lines (UTC: the agent's and the sidecar's lines interleave)."""
    formatter = logging.Formatter(LOG_FORMAT, LOG_DATEFMT)
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    return handler
