"""Build the compiled hot path (proxy/_fastpath.pyx) against OpenSSL.

Everything else about the package lives in pyproject.toml; this file only
exists because a C extension needs a build step, and it follows uvloop's
setup.py:

- Cython is pinned (``CYTHON_DEPENDENCY``, the same pin as pyproject's
  build-system requires) and imported only when C has to be generated.
- The .pyx is cythonized on demand, in build_ext: when its C is missing or
  older than any .pyx/.pxi/.pxd, or when asked (``--cython-always``).
  Generated C never enters git; ``setup.py --version``, sdist metadata and
  a build without the extension never need Cython.
- ``SPIFFE_SIDECAR_CYTHON_ANNOTATE=1`` (or ``build_ext --cython-annotate``)
  also writes proxy/_fastpath.html, Cython's line-by-line view of where
  Python objects are touched: the check for the hot path's "no Python per
  chunk" rule.
- SPIFFE_SIDECAR_NO_EXTENSIONS=1 at build time skips the extension; the
  package then runs on the pure-Python engine (tls/engine_py.py).
- A missing compiler or missing OpenSSL headers stops the build with a
  message that says which package to install, instead of a wall of gcc.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

#: The Cython the extension is built and tested with (pyproject.toml's build requires says the same).
CYTHON_DEPENDENCY = "Cython~=3.3.1"
CYTHON_MINIMUM = (3, 3, 1)
ROOT = pathlib.Path(__file__).parent
NO_EXTENSIONS = os.environ.get("SPIFFE_SIDECAR_NO_EXTENSIONS", "") not in ("", "0")
ANNOTATE_ENV = "SPIFFE_SIDECAR_CYTHON_ANNOTATE"
DIRECTIVES = {"language_level": "3", "boundscheck": False, "wraparound": False}


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


def _stale(pyx: pathlib.Path) -> bool:
    """True when pyx's C is missing or older than any Cython source beside it (.pyx, .pxi, .pxd)."""
    c_file = pyx.with_suffix(".c")
    if not c_file.exists():
        return True
    newest = max(p.stat().st_mtime for p in pyx.parent.iterdir() if p.suffix in (".pyx", ".pxi", ".pxd"))
    return newest > c_file.stat().st_mtime


class build_ext(_build_ext):  # noqa: N801 (setuptools' command name)
    """build_ext that cythonizes on demand (uvloop's approach)."""

    user_options = _build_ext.user_options + [
        ("cython-always", None, "run cythonize() even if the .c files are present and up to date"),
        ("cython-annotate", None, f"produce a colorized HTML view of the Cython source (or {ANNOTATE_ENV}=1)"),
    ]
    boolean_options = _build_ext.boolean_options + ["cython-always", "cython-annotate"]

    def initialize_options(self) -> None:
        super().initialize_options()
        self.cython_always = False
        self.cython_annotate = os.environ.get(ANNOTATE_ENV, "") not in ("", "0")

    def finalize_options(self) -> None:
        # finalize_options runs more than once when build_ext is re-invoked (editable installs).
        if getattr(self, "_cythonized", False) or not self.distribution.ext_modules:
            super().finalize_options()
            return
        include_dirs = self.distribution.ext_modules[0].include_dirs
        _check_toolchain(include_dirs)
        need = self.cython_always or self.cython_annotate
        for ext in self.distribution.ext_modules:
            for i, source in enumerate(ext.sources):
                if source.endswith(".pyx"):
                    if need or _stale(ROOT / source):
                        need = True
                    else:
                        ext.sources[i] = source[:-len(".pyx")] + ".c"
        if need:
            self._cythonize()
        self._cythonized = True
        super().finalize_options()

    def _cythonize(self) -> None:
        try:
            import Cython
        except ImportError:
            sys.exit(f"spiffe-sidecar: {CYTHON_DEPENDENCY} is needed to generate C from proxy/_fastpath.pyx"
                     f" (pip install '{CYTHON_DEPENDENCY}'), or build without the extension:"
                     " SPIFFE_SIDECAR_NO_EXTENSIONS=1 pip install .")
        # ~=3.3.1: 3.3.x from 3.3.1 on (pip enforces it in an isolated build; this catches
        # --no-build-isolation with another Cython, without needing `packaging` here).
        have = tuple(int(p) for p in Cython.__version__.split(".")[:3] if p.isdigit())
        if have[:2] != CYTHON_MINIMUM[:2] or have < CYTHON_MINIMUM:
            sys.exit(f"spiffe-sidecar: Cython {Cython.__version__} is installed; the build needs {CYTHON_DEPENDENCY}")
        from Cython.Build import cythonize

        self.distribution.ext_modules[:] = cythonize(
            self.distribution.ext_modules, compiler_directives=DIRECTIVES, annotate=self.cython_annotate,
            force=True, quiet=True)  # we already decided C must be (re)generated


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    include_dirs, library_dirs = _openssl_dirs()
    return [Extension(
        "proxy._fastpath",
        sources=["proxy/_fastpath.pyx"],
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=["ssl", "crypto"],
        extra_compile_args=["-O2"],
    )]


setup(ext_modules=_extensions(), cmdclass={"build_ext": build_ext})
