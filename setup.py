"""Build the compiled hot path (proxy/_fastpath.pyx) against OpenSSL.

Everything else about the package lives in pyproject.toml; this file only
exists because a C extension needs a build step (the uvloop convention).

- The .pyx is cythonized on demand: generated C never enters git.
- SPIFFE_SIDECAR_NO_EXTENSIONS=1 at build time skips the extension; the
  package then runs on the pure-Python engine (tls/engine_py.py).
- A missing compiler or missing OpenSSL headers stops the build with a
  message that says which package to install, instead of a wall of gcc.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("SPIFFE_SIDECAR_NO_EXTENSIONS", "") not in ("", "0")


def _openssl_dirs() -> tuple[list[str], list[str]]:
    """Where the OpenSSL headers and libraries are (OPENSSL_DIR overrides)."""
    root = os.environ.get("OPENSSL_DIR")
    if root:
        return [os.path.join(root, "include")], [os.path.join(root, "lib"), os.path.join(root, "lib64")]
    return [], []


def _check_toolchain(include_dirs: list[str]) -> None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        sys.exit(
            f"spiffe-sidecar: no C compiler ({cc!r}) found to build proxy/_fastpath.pyx.\n"
            "  Debian/Ubuntu: apt-get install build-essential libssl-dev\n"
            "  or build without the extension: SPIFFE_SIDECAR_NO_EXTENSIONS=1 pip install ."
        )
    candidates = include_dirs + ["/usr/include", "/usr/local/include"]
    if not any(os.path.exists(os.path.join(d, "openssl", "ssl.h")) for d in candidates):
        sys.exit(
            "spiffe-sidecar: OpenSSL headers (openssl/ssl.h) not found to build proxy/_fastpath.pyx.\n"
            "  Debian/Ubuntu: apt-get install libssl-dev   (or set OPENSSL_DIR)\n"
            "  or build without the extension: SPIFFE_SIDECAR_NO_EXTENSIONS=1 pip install ."
        )


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    include_dirs, library_dirs = _openssl_dirs()
    _check_toolchain(include_dirs)
    from Cython.Build import cythonize

    ext = Extension(
        "proxy._fastpath",
        sources=["proxy/_fastpath.pyx"],
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=["ssl", "crypto"],
        extra_compile_args=["-O2"],
    )
    return cythonize(
        [ext],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    )


setup(ext_modules=_extensions())
