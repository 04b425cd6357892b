"""`spiffe-sidecar agent --config agent.yaml [--socket PATH]`: run the embedded Workload API.

Runs until SIGINT/SIGTERM and logs one line per event on stderr (started,
attested pid -> entries, SVID issued with expiry, CA rotation, denial with
the observed selectors). A bad config exits 2 with file:line:field.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

import trio

from proxy.agent.config import SOCKET_ENV, STATE_DIR_ENV, load_agent_config, with_socket, with_state_dir
from proxy.agent.server import serve_agent
from proxy.commands import LOG_LEVELS, log_handler, plain
from proxy.errors import SidecarError


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `agent` subcommand."""
    p = sub.add_parser("agent", help="run the embedded SPIFFE Workload API agent (attestation + local CA)",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True, help="agent.yaml (see examples/agent.yaml)")
    p.add_argument("--socket", help=f"Unix socket path (overrides socket_path and ${SOCKET_ENV})")
    p.add_argument("--state-dir", help=f"where the CAs persist across restarts (overrides state_dir and"
                   f" ${STATE_DIR_ENV})")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                   help="diagnostics on stderr from this level up (default info)")
    p.set_defaults(func=run)


def configure_logging(level: str) -> None:
    """One line per event on stderr, in the format every command uses."""
    logger = logging.getLogger("spiffe_sidecar.agent")
    logger.handlers[:] = [log_handler()]
    logger.setLevel(level.upper())
    logger.propagate = False


def run(args: argparse.Namespace) -> int:
    """Load the config (errors raise ConfigError -> exit 2 in cli.main), then serve until signalled."""
    config = load_agent_config(args.config)
    if args.socket:
        config = with_socket(config, Path(args.socket))
    if args.state_dir:
        config = with_state_dir(config, Path(args.state_dir))
    configure_logging(args.log_level)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            await nursery.start(serve_agent, config)

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        # Start-up errors (socket in use...) surface through trio's nurseries
        # as groups; show the SidecarError itself, as every other command does.
        raise _first_sidecar_error(group) from None
    return 0


def _first_sidecar_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    matched, _ = group.split(SidecarError)
    found: BaseException | None = matched
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if found is not None else group


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logging.getLogger("spiffe_sidecar.agent").info("stopping on %s", signal.Signals(signum).name)
            scope.cancel()
            return
