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
    parser.add_argument("--version", action=_Version, help="print the version, the TLS engine and the OpenSSL it "
                        "runs on, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"proxy.commands.{name}")
        module.register(sub)
    return parser


def version_text() -> str:
    """The version, and which engine and OpenSSL this process would use (SPIFFE_SIDECAR_NO_EXTENSIONS counts).

    "Which OpenSSL" matters: the compiled engine runs on the system's libssl,
    the pure-Python one on the OpenSSL inside cryptography's wheel.
    """
    import platform

    from proxy.tls.engine import load_engine

    engine = load_engine()
    kind = "compiled" if engine.NAME == "fastpath" else "pure Python, pyOpenSSL"
    return (f"spiffe-sidecar {__version__}\n"
            f"engine: {engine.NAME} ({kind})\n"
            f"openssl: {engine.openssl_version()}\n"
            f"python: {platform.python_implementation()} {platform.python_version()}")


class _Version(argparse.Action):
    """``--version``, computed when asked: loading the engine costs more than building the parser."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


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
