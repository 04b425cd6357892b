"""`spiffe-sidecar demo`: the embedded agent, two apps behind their sidecars, three checks.

Shows an authorized call through mTLS, an unauthorized workload denied with
the rule that denied it, and SVID rotations under live traffic with no
failed request; exits 0 only if all three pass, and removes every process
and file it made.
"""

from __future__ import annotations

import argparse
import logging

from proxy.commands import log_handler, plain


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser("demo", help="run the end-to-end demo (agent + two apps behind sidecars)",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--svid-ttl", type=float, default=6.0, help="X.509-SVID lifetime in seconds (default 6)")
    p.add_argument("--rotations", type=int, default=2, help="rotations to watch under load (default 2)")
    p.add_argument("--runtime", choices=("trio", "uvloop"), default=None,
                   help="run every sidecar on this runtime (default: backend trio, frontend uvloop)")
    p.add_argument("--engine", choices=("auto", "python", "fastpath"), default="auto",
                   help="TLS engine of the sidecars (default: compiled if built)")
    p.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 only if every check passed."""
    from proxy.demo.scenario import DemoOptions, run_demo

    root = logging.getLogger()
    root.handlers[:] = [log_handler()]  # the format run and agent use
    root.setLevel(logging.WARNING)
    return run_demo(DemoOptions(svid_ttl=args.svid_ttl, rotations=max(1, args.rotations), runtime=args.runtime,
                                engine=args.engine))
