"""Subcommands of the `spiffe-sidecar` CLI (see proxy/cli.py)."""
