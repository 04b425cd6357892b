"""The CLI's own words: help without reST markup, help for every option, an informative --version."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Iterator

import pytest

from proxy.cli import build_parser
from proxy.demo.interpreter import interpreter_env


def _parsers(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_no_help_text_shows_rest_backticks_and_every_option_says_what_it_does() -> None:
    missing, marked = [], []
    for path, parser in _parsers(build_parser(), "spiffe-sidecar"):
        if "`" in parser.format_help():
            marked.append(path)
        missing += [f"{path} {a.option_strings or a.dest}" for a in parser._actions
                    if a.help is None and not isinstance(a, argparse._SubParsersAction)]
    assert marked == [] and missing == []


@pytest.mark.parametrize("engine", ["python", "fastpath"])
def test_version_names_the_engine_and_the_openssl_it_runs_on(engine: str) -> None:
    if engine == "fastpath":
        fastpath = pytest.importorskip("proxy._fastpath", reason="the compiled engine is not built")
        expected = fastpath.openssl_version()
    else:
        from OpenSSL import SSL

        expected = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    env = interpreter_env({"SPIFFE_SIDECAR_NO_EXTENSIONS": "1" if engine == "python" else "0"},
                          base={k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")})
    done = subprocess.run([sys.executable, "-m", "proxy", "--version"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("spiffe-sidecar ") and lines[1].startswith(f"engine: {engine} (")
    assert lines[2] == f"openssl: {expected}"
