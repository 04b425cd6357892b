"""`spiffe-sidecar run --config sidecar.yaml`: serve the listeners of one sidecar.

Warns about every unknown ``SPIFFE_SIDECAR_*`` environment variable (a
typo would otherwise be ignored silently), loads the config and its policy
file (any error names file:line:field and exits 2 before anything is bound), binds every listener (refusing until the
first SVID: fail closed), starts the identity source, logs one ``ready``
line, and stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help="run the sidecar (inbound/outbound mTLS listeners) from a config file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from_env = os.environ.get("SPIFFE_SIDECAR_CONFIG")
    p.add_argument("-c", "--config", required=not from_env, default=from_env, metavar="FILE",
                   help="sidecar.yaml (env: SPIFFE_SIDECAR_CONFIG)")
    p.set_defaults(func=run_command)


def configure_logging(level: str) -> None:
    """Diagnostics to stderr, one line each (stdout carries the access log)."""
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_command(args: argparse.Namespace) -> int:
    """Load, wire and serve; returns the process exit code."""
    from proxy.config.environment import unknown_variable_warnings
    from proxy.config.load import load_sidecar
    from proxy.sidecar import run_sidecar

    configure_logging("info")  # before the load: a mistyped variable may be why the config fails
    log = logging.getLogger("spiffe_sidecar")
    for warning in unknown_variable_warnings(os.environ):
        log.warning("%s", warning)
    config, policies = load_sidecar(args.config)
    logging.getLogger().setLevel(config.log.level.value.upper())
    try:
        return run_sidecar(config, policies)
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
