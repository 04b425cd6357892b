"""`spiffe-sidecar run`: (being built)."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("run", help="(not built yet)")
    p.set_defaults(func=lambda args: (print("spiffe-sidecar run: not built yet") or 1))
