"""The long-running Workload API source: stream, validate, publish, retry (trio).

``run_x509_source`` keeps one FetchX509SVID stream open for the life of
the sidecar and publishes every valid update to an ``IdentityStore``:

- Each update is the full state (a missing federated bundle is withdrawn
  because the snapshot is built from that update alone).
- An update with no SVID (redaction) withdraws our identity: the spec says
  clients SHOULD stop using it. PERMISSION_DENIED does too, by default. So
  does an update without the SVID ``want`` asked for: the server no longer
  grants that identity, and presenting another one instead would be worse.
- An update the store refuses (expired leaf, no own bundle) or that fails
  SPIFFE validation keeps the last good snapshot; the stream goes on.
- UNAVAILABLE, PERMISSION_DENIED, connection failures and other transient
  codes are retried with capped exponential backoff and jitter (0.1s
  doubling to 5s, like py-spiffe); INVALID_ARGUMENT and UNIMPLEMENTED are
  raised at once (the spec: do not retry).
- Between attempts the last good SVID stays in use until it expires; the
  store decides what "valid" means at each read.

``reconnecting`` is that retry policy on its own (any stream of updates,
failures announced to a callback); ``svid watch`` uses it too, so the CLI
and the sidecar reconnect alike.

``wait_for_first_svid`` bounds the start-up wait and, on timeout, raises a
diagnostic that says what to check.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import AsyncGenerator, Callable, NoReturn, TypeVar

import trio

from proxy.errors import NoIdentityError, SpiffeError
from proxy.identity import messages
from proxy.identity.address import WorkloadApiAddress, parse_address, resolve_address
from proxy.identity.client import WorkloadApiClient
from proxy.identity.diagnose import first_svid_diagnostic, waiting_note
from proxy.identity.snapshot import IdentitySnapshot
from proxy.identity.store import IdentityStore, SourceState, SourceStatus
from proxy.workload_api import workload_pb2 as pb
from proxy.workload_api.grpc import GrpcStatusError, StatusCode

#: Codes the spec says never to retry.
FATAL_CODES = frozenset({StatusCode.INVALID_ARGUMENT, StatusCode.UNIMPLEMENTED})

_T = TypeVar("_T")
_log = logging.getLogger("spiffe_sidecar")


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Capped exponential backoff with jitter.

    Attributes:
        initial: the first delay, seconds.
        maximum: the cap, seconds.
        factor: growth per failed attempt.
        jitter: each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    """

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rand: float) -> float:
        """Delay before retry number ``attempt`` (1-based); ``rand`` is uniform in [0, 1)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return max(0.0, base * (1 - self.jitter + 2 * self.jitter * rand))


StateCallback = Callable[[SourceState], None]

#: Called with the failure and the number of consecutive failures (1-based) before each wait.
FailureCallback = Callable[[GrpcStatusError, int], None]


async def reconnecting(open_updates: Callable[[], AsyncGenerator[_T, None]], *, backoff: Backoff,
                       on_failure: FailureCallback) -> AsyncGenerator[_T, None]:
    """Yield every update of a stream, reopening it after each retryable failure.

    The count of consecutive failures restarts at the first update of a new
    stream, so a flapping server is retried quickly again once it answered.
    Close it with ``contextlib.aclosing``; closing closes the open stream.

    Args:
        open_updates: opens one stream (e.g. ``client.watch_x509_context``).
        backoff: the delay before each new attempt.
        on_failure: told about each retryable failure before the wait.

    Raises:
        GrpcStatusError: a code in FATAL_CODES (the spec: do not retry).
    """
    attempt = 0
    while True:
        try:
            async with contextlib.aclosing(open_updates()) as updates:
                async for update in updates:
                    attempt = 0
                    yield update
        except GrpcStatusError as exc:
            if exc.status in FATAL_CODES:
                raise
            attempt += 1
            on_failure(exc, attempt)
            await trio.sleep(backoff.delay(attempt, random.random()))


class _X509Stream:
    """One source's bookkeeping: applies updates and reports state."""

    def __init__(self, address: WorkloadApiAddress, store: IdentityStore, on_state: StateCallback | None,
                 want: str | None, clock: Callable[[], float]) -> None:
        self.address, self.store, self.want, self.clock = address, store, want, clock
        self.on_state = on_state
        self.attempt = 0
        self.last_error: str | None = None
        self.lost_at: float | None = None  # when an established stream failed; None while connected
        self.connected = False
        self.tries = 0  # failed attempts of the current outage (attempt is reset before an update is applied)

    def report(self, state: SourceStatus, error: str | None = None) -> None:
        if error is not None:
            self.last_error = error
        snapshot = SourceState(state, source=str(self.address), last_error=self.last_error,
                               since=self.clock(), attempt=self.attempt)
        self.store.report(snapshot)
        if self.on_state is not None:
            self.on_state(snapshot)

    def apply(self, response: pb.X509SVIDResponse) -> None:
        """Publish one update; a bad one is reported, never raised."""
        self._back()
        try:
            context = messages.x509_context(response)
        except SpiffeError as exc:
            # Never served: the last good identity stays in use until it expires.
            message = f"refused update from the Workload API at {self.address}: {exc}"
            _log.error("%s", message)
            self.report(SourceStatus.CONNECTED, message)
            return
        if context.redacted:
            self.store.withdraw(f"the Workload API at {self.address} redacted our X.509-SVIDs")
            self.report(SourceStatus.WITHDRAWN, "the server sent an update without X.509-SVIDs (redacted)")
            return
        try:
            snapshot = IdentitySnapshot.from_context(context, want=self.want, source=str(self.address))
        except NoIdentityError as exc:
            # Not a bad update but the full state: the wanted SVID was withdrawn.
            self.store.withdraw(f"the Workload API at {self.address} withdrew the X.509-SVID {self.want!r}: {exc}")
            self.report(SourceStatus.WITHDRAWN, str(exc))
            return
        try:
            self.store.publish(snapshot, self.clock())
        except NoIdentityError as exc:
            self.report(SourceStatus.CONNECTED, str(exc))
            return
        self.last_error = None
        self.report(SourceStatus.CONNECTED)

    def failed(self, exc: GrpcStatusError, attempt: int, withdraw_on_denied: bool) -> None:
        """A retryable failure: withdraw on PERMISSION_DENIED (if asked), report reconnecting."""
        if exc.status == StatusCode.PERMISSION_DENIED and withdraw_on_denied:
            self.store.withdraw(f"the Workload API at {self.address} denied us: {exc.message}")
        self.attempt = self.tries = attempt
        self._lost(exc)
        self.report(SourceStatus.RECONNECTING, str(exc))

    def _lost(self, exc: GrpcStatusError) -> None:
        """WARNING once when an established stream fails: the SVID then expires silently otherwise."""
        if not self.connected:
            return
        self.connected, self.lost_at = False, self.clock()
        latest = self.store.latest
        left = (f"our X.509-SVID {latest.spiffe_id} stays in use until it expires in"
                f" {max(0.0, latest.not_after - self.lost_at):.0f}s") if latest is not None else "no SVID to keep"
        _log.warning("Workload API at %s: stream lost (%s); %s; reconnecting", self.address, exc, left)

    def _back(self) -> None:
        """WARNING when a lost stream delivers again, with how long it was away."""
        if self.lost_at is not None:
            _log.warning("Workload API at %s: reconnected after %.1fs (%d attempts)", self.address,
                         self.clock() - self.lost_at, self.tries)
            self.lost_at = None
        self.connected = True


async def run_x509_source(address: WorkloadApiAddress | str | None, store: IdentityStore, *,
                          backoff: Backoff = Backoff(), on_state: StateCallback | None = None,
                          want: str | None = None, withdraw_on_denied: bool = True,
                          clock: Callable[[], float] = time.time,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
    """Stream X.509 updates into ``store`` forever (see the module docstring).

    Args:
        address: Workload API address, or None for ``SPIFFE_ENDPOINT_SOCKET``.
        store: where validated snapshots are published and state reported.
        backoff: retry delays.
        on_state: also called with every state change (connected, reconnecting...).
        want: present the SVID with this hint or SPIFFE ID instead of the first;
            an update without it withdraws our identity (never falls back to another).
        withdraw_on_denied: stop using our SVID on PERMISSION_DENIED (the spec's SHOULD).
        clock: the wall clock (tests pass their own).
        task_status: ``nursery.start`` returns once the address is resolved.

    Raises:
        GrpcStatusError: INVALID_ARGUMENT or UNIMPLEMENTED from the server (not retried).
        ConfigError: the address is missing or invalid.
    """
    resolved = address if isinstance(address, WorkloadApiAddress) else (
        parse_address(address) if address else resolve_address())
    stream = _X509Stream(resolved, store, on_state, want, clock)
    stream.report(SourceStatus.STARTING)
    task_status.started()
    async with WorkloadApiClient(resolved) as client:
        try:
            async with contextlib.aclosing(reconnecting(
                    client.watch_x509_responses, backoff=backoff,
                    on_failure=lambda exc, attempt: stream.failed(exc, attempt, withdraw_on_denied))) as updates:
                async for response in updates:
                    stream.attempt = 0
                    stream.apply(response)
        except GrpcStatusError as exc:
            stream.report(SourceStatus.FAILED, str(exc))
            raise
    raise AssertionError("unreachable: reconnecting() ends only by raising")  # pragma: no cover


async def wait_for_first_svid(store: IdentityStore, timeout: float, *,
                              clock: Callable[[], float] = time.time,
                              progress: Callable[[str], None] | None = None,
                              every: float = 5.0) -> IdentitySnapshot:
    """Wait up to ``timeout`` seconds until the store holds a usable snapshot.

    Returns at once when one is already there. Safe when publications
    come from another thread. A wait is never silent: ``progress`` gets a
    line (``waiting_note``) every ``every`` seconds saying what the source
    is doing and its last error.

    Raises:
        NoIdentityError: on timeout, with a diagnostic of what to check
            for the cause at hand (``first_svid_diagnostic``).
    """
    token = trio.lowlevel.current_trio_token()
    wakeup = trio.Event()

    def on_change(snapshot: IdentitySnapshot | None) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(wakeup.set)

    unsubscribe = store.subscribe(on_change)
    start = trio.current_time()
    deadline, next_note = start + timeout, start + every
    try:
        while (snapshot := store.current(clock())) is None:
            now = trio.current_time()
            if now >= deadline:
                break
            if now >= next_note:
                next_note = now + every
                if progress is not None:
                    progress(waiting_note(store, now - start, timeout))
            with trio.move_on_at(min(deadline, next_note)):
                await wakeup.wait()
                wakeup = trio.Event()
        else:
            return snapshot
    finally:
        unsubscribe()
    raise NoIdentityError(first_svid_diagnostic(store, timeout))
