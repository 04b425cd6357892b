"""What a runtime driver needs of the sidecar it serves, as a Protocol.

The drivers (trio_driver.py, uvloop_driver.py) start the identity source,
open the data plane, run the operations around it and drain on a signal;
this is all they may touch of ``proxy.sidecar.Sidecar``. Naming this
instead of Sidecar keeps the runtime package below the composition root
(sidecar.py imports the drivers; the drivers do not import sidecar.py, not
even for the type checker), and mypy checks Sidecar against it where
sidecar.py hands itself to a driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

if TYPE_CHECKING:
    from proxy.config.model import SidecarConfig
    from proxy.identity.snapshot import IdentitySnapshot
    from proxy.identity.store import IdentityStore
    from proxy.runtime.base import DataPlane


class Reloads(Protocol):
    """The reload watch as a driver sees it: SIGHUP asks for a reload."""

    def request(self) -> None: ...


class ServedSidecar(Protocol):
    """The sidecar a driver runs (``proxy.sidecar.Sidecar`` is one)."""

    @property
    def config(self) -> SidecarConfig: ...
    @property
    def store(self) -> IdentityStore: ...
    @property
    def plane(self) -> DataPlane | None: ...
    @property
    def reloader(self) -> Reloads | None: ...
    @property
    def first_svid_timeout(self) -> float: ...

    def open_data_plane(self) -> DataPlane:
        """Bind every listener (they refuse until the first SVID)."""
        ...

    def start_operations(self) -> None: ...

    def stop_operations(self) -> None: ...

    def begin_drain(self) -> None: ...

    def identity_source(self) -> Callable[[], Awaitable[object]]:
        """The trio task that feeds the identity store; never returns."""
        ...

    def log_identity(self, snapshot: IdentitySnapshot | None) -> None: ...

    def log_ready(self) -> None: ...
