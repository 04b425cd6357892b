"""Giving freed heap back to the system after a handshake flood (issue 11.5).

Thousands of connections that came and went leave glibc's heap holding
their freed memory: RSS stays at the flood's peak although nothing uses
it. ``malloc_trim(0)`` returns the free pages at the top of the heap and
in its arenas to the system. It costs a few milliseconds, so the runtime
calls it only when proxy.connection.pending says a flood has subsided.
A libc without malloc_trim (musl) makes this a no-op.
"""

from __future__ import annotations

import ctypes
import gc
import ctypes.util
import logging
from typing import Callable

_log = logging.getLogger("spiffe_sidecar")


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_MALLOC_TRIM = _load_malloc_trim()


def give_back_heap(listener: str) -> bool:
    """Return free heap pages to the system (glibc); True when anything was released."""
    gc.collect()  # a flood's connections leave reference cycles (tasks, tracebacks) behind
    if _MALLOC_TRIM is None:
        return False
    released = bool(_MALLOC_TRIM(0))
    _log.info("listener %s: handshake flood over; free heap %s to the system", listener,
              "returned" if released else "already returned")
    return released
