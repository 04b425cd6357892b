"""The `spiffe-sidecar` command line: one subcommand module per job.

Each module in proxy/commands/ exposes ``register(subparsers)`` which adds
its subcommand(s) and sets ``func`` (returning an exit code) on the parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from proxy import __version__
from proxy.errors import SidecarError

#: Subcommand modules, in the order `--help` lists them.
COMMAND_MODULES = ("run", "agent", "svid", "policy", "demo", "iptables")


def build_parser() -> argparse.ArgumentParser:
    """The full argparse tree (also used by tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="spiffe-sidecar",
        description="SPIFFE sidecar proxy: attested workload identity and mTLS with per-connection authorization.",
    )
    parser.add_argument("--version", action="version", version=f"spiffe-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"proxy.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SidecarError as exc:
        print(f"spiffe-sidecar: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
