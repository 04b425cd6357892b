"""Running trio code in a thread of its own (for the uvloop runtime and the demo)."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Awaitable, Callable

if TYPE_CHECKING:  # names only: _run imports trio in the thread that runs it
    import trio

_log = logging.getLogger("spiffe_sidecar")


class TrioThread:
    """Runs one trio task in its own thread with its own ``trio.run``.

    The Workload API client is trio code: on the uvloop runtime it gets a
    thread so the data path's loop never waits for it (the demo runs the
    embedded agent the same way). ``stop`` cancels the task from any thread
    through the trio token and joins; an exception that ends the task is
    kept in ``error`` and logged.
    """

    def __init__(self, source: Callable[[], Awaitable[object]], *, name: str = "trio") -> None:
        self._source = source
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(5.0)

    def _run(self) -> None:
        import trio

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                self._started.set()
                await self._source()

        try:
            trio.run(main)
        except BaseException as exc:  # reported by the loop thread; the thread must not die silently
            self.error = exc
            _log.error("%s stopped: %s", self._thread.name, exc)
        finally:
            self._started.set()

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            with contextlib.suppress(Exception):
                self._token.run_sync_soon(self._scope.cancel)
        self._thread.join(5.0)
