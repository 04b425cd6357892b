"""`spiffe-sidecar run --config sidecar.yaml`: serve the listeners of one sidecar.

Warns about every unknown ``SPIFFE_SIDECAR_*`` environment variable (a
typo would otherwise be ignored silently), loads the config and its policy
file (any error names file:line:field and exits 2 before anything is
bound), binds every listener (refusing until the first SVID: fail closed),
starts the identity source, logs one ``ready`` line, and stops on
SIGINT/SIGTERM.

Exit codes: 0 after a clean stop, 2 for an invalid config or policy file
(as policy check), 1 when it cannot serve (an address in use, no SVID
within first_svid_timeout, identity files that cannot be loaded).
"""

from __future__ import annotations

import argparse
import logging
import os

from proxy.commands import LOG_LEVELS, log_handler, plain

#: The variable that overrides log.level (and that --log-level sets).
LOG_LEVEL_ENV = "SPIFFE_SIDECAR_LOG_LEVEL"
#: Libraries whose debug output is per frame (h2's Workload API stream): kept at info.
QUIET_LIBRARIES = ("hpack", "h2")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help="run the sidecar (inbound/outbound mTLS listeners) from a config file",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    from_env = os.environ.get("SPIFFE_SIDECAR_CONFIG")
    p.add_argument("-c", "--config", required=not from_env, default=from_env, metavar="FILE",
                   help="sidecar.yaml (env: SPIFFE_SIDECAR_CONFIG)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                   help="diagnostics on stderr from this level up; overrides log.level and "
                        f"${LOG_LEVEL_ENV}, also across reloads (default: log.level, info)")
    p.set_defaults(func=run_command)


def configure_logging(level: str) -> None:
    """Diagnostics to stderr, one line each, as every command writes them (stdout carries the access log)."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler()]
    root.setLevel(level.upper())
    for chatty in QUIET_LIBRARIES:  # debug means ours: these log every frame and header at debug
        logging.getLogger(chatty).setLevel(logging.INFO)


def run_command(args: argparse.Namespace) -> int:
    """Load, wire and serve; returns the process exit code."""
    from proxy.config.environment import unknown_variable_warnings
    from proxy.config.load import load_sidecar
    from proxy.sidecar import run_sidecar

    if args.log_level:
        # The flag is the variable's value: the loader (and every reload) then reads it like any override.
        os.environ[LOG_LEVEL_ENV] = args.log_level
    configure_logging(args.log_level or "info")  # before the load: a mistyped variable may be why it fails
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
