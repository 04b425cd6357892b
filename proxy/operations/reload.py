"""Live reload of the policy (and the reloadable config), plus the identity-expiry watch.

A reload re-reads sidecar.yaml and its policy file with the very loader
``run`` and ``policy check`` use, so validation is complete before anything
is swapped: a bad file (YAML syntax, unknown key, invalid SPIFFE ID
pattern, a listener naming a policy that no longer exists) is rejected as a
whole, the last good policy keeps enforcing, the error (file:line:field) is
logged, and ``stale`` says so on /ready and in ``spiffe_sidecar_policy_stale``.
A good one replaces ``Sidecar.policies`` (one reference): connections read it
when accepted, so new connections see it at once and established ones keep
the decision they got.

Triggers: SIGHUP (the drivers call ``request``) and a file watch. The watch
polls (mtime, size, inode) of both files every ``interval`` seconds in its
own thread rather than using inotify (watchfiles): no extra dependency, it
sees atomic renames (ConfigMap symlink swaps) and in-place edits alike, and
the cost is a couple of stat() calls per tick off the data path. The same
thread notices when our SVID expires without a renewal and says so once
(the data path already fails closed by itself: the TLS context is None).

A changed file is loaded only once it has settled: an in-place save seen
half-way (a writer that truncates, writes part, pauses, writes the rest)
can be valid YAML that allows more than the whole file would, and it used
to be applied. A file replaced by rename (a new inode: complete by
construction) is loaded once a second look 50 ms later shows it unchanged; a file
modified in place must keep the same size, mtime and content hash for
``settle`` seconds. Renaming a complete file into place is the safe way to
write either file; a writer pausing longer than ``settle`` mid-save can
still be seen half-way. SIGHUP loads at once: the operator says it is done.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.config.model import SidecarConfig
    from proxy.identity.store import IdentityStore
    from proxy.operations.metrics import Metrics
    from proxy.policy.evaluate import PolicySet

_log = logging.getLogger("spiffe_sidecar")
#: Poll period of the file watch: a policy saved by rename is in force within about 0.4 s.
WATCH_INTERVAL = 0.2
#: How long a file modified in place must stay unchanged before it is loaded (see the module docstring).
SETTLE_INTERVAL = 1.0
#: A file replaced by rename is loaded once it is seen unchanged this much later.
RENAME_CONFIRM = 0.05
#: (mtime_ns, size, inode) of one watched file, or None while it is missing.
FileStat = tuple[int, int, int] | None


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The outcome of the last reload, for /ready and /config.

    Attributes:
        stale: the last reload was rejected; an older policy is enforcing.
        error: why it was rejected (file:line:field: detail), or None.
        loaded_at: when the running policy was loaded (Unix seconds).
        reloads: successful reloads since start.
    """

    stale: bool = False
    error: str | None = None
    loaded_at: float = 0.0
    reloads: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"stale": self.stale, "error": self.error, "loaded_at": self.loaded_at, "reloads": self.reloads}


class Reloadable(Protocol):
    """What a Reloader reads and swaps: the running config, and one call that publishes a reload.

    ``proxy.sidecar.Sidecar`` is one; naming only this keeps reload.py below
    the composition root instead of in a circle with it.
    """

    @property
    def config(self) -> SidecarConfig: ...
    @property
    def metrics(self) -> Metrics | None: ...
    @property
    def store(self) -> IdentityStore: ...

    def apply_reload(self, policies: PolicySet | None, config: SidecarConfig | None = None) -> None: ...


class Reloader:
    """Watches sidecar.yaml and the policy file; validates then swaps (see the module docstring).

    Args:
        sidecar: whose ``policies`` and ``config`` are swapped.
        interval: the file watch's poll period in seconds.
        settle: seconds a file modified in place must stay unchanged before it is loaded.
    """

    def __init__(self, sidecar: Reloadable, *, interval: float = WATCH_INTERVAL,
                 settle: float = SETTLE_INTERVAL) -> None:
        self.sidecar = sidecar
        self.interval = interval
        self.settle = settle
        self.status = ReloadStatus(loaded_at=time.time())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requested = False
        self._held: list[int] = []  # fds of the files last seen, so their inode numbers cannot be reused
        self._seen = self._hold()
        self._pending: tuple[tuple[FileStat, ...], tuple[str, ...]] | None = None  # (stats, hashes) seen changing
        self._pending_since = 0.0
        self._next_wait = interval
        self._expired_said = False
        self._thread = threading.Thread(target=self._run, name="reload-watch", daemon=True)

    def start(self) -> None:
        """Start the watch thread (stopped by ``stop``)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the watch thread and join it (bounded)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(2.0)
        self._release()

    def request(self) -> None:
        """Ask for a reload now (SIGHUP); safe from a signal handler or any thread."""
        self._requested = True
        self._wake.set()

    # --- the thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._next_wait)
            self._wake.clear()
            self._next_wait = self.interval
            if self._stop.is_set():
                return
            try:
                self._tick()
            except Exception:  # the watch must outlive any surprise; the data path does not depend on it
                _log.exception("reload watch: unexpected error")

    def _tick(self) -> None:
        if self._requested:
            self._requested = False
            self._pending = None
            self._seen = self._hold()
            self.reload("SIGHUP")
        elif self._settled(time.monotonic()):
            self.reload("file change")
        self._watch_expiry(time.time())

    def _settled(self, now: float) -> bool:
        """True once a change to the watched files has settled (see the module docstring)."""
        stats = self._stats()
        if stats == self._seen:
            self._pending = None
            return False
        observed = (stats, tuple(_digest(p) for p in self._paths()))
        replaced = all(new is None or old is None or new[2] != old[2]
                       for old, new in zip(self._seen, stats) if old != new)
        if observed != self._pending:
            if self._pending is None:
                _log.debug("reload watch: change seen, loading once it settles")
            self._pending, self._pending_since = observed, now  # (still) changing: start the clock again
            if replaced:
                self._next_wait = RENAME_CONFIRM  # complete by construction: confirm soon, not a tick later
            return False
        if not replaced and now - self._pending_since < self.settle:
            return False
        self._seen, self._pending = self._hold(), None
        return True

    def _paths(self) -> tuple[Path, ...]:
        config = self.sidecar.config
        return tuple(Path(p) for p in (config.file, config.policy_file) if p is not None)

    def _stats(self) -> tuple[FileStat, ...]:
        return tuple(_stat(p) for p in self._paths())

    def _hold(self) -> tuple[FileStat, ...]:
        """Open the watched files and return their stats.

        A replaced file is told apart from one modified in place by its inode
        number; holding the old file open keeps its number from being handed to
        the next file written (ext4 reuses a freed one at once).
        """
        self._release()
        for path in self._paths():
            try:
                self._held.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                pass
        return self._stats()

    def _release(self) -> None:
        for fd in self._held:
            os.close(fd)
        self._held = []

    # --- reload -------------------------------------------------------------------

    def reload(self, trigger: str = "request") -> bool:
        """Validate the files fully, then swap; True when the new policy is in force."""
        from proxy.config.load import check_policy_references, load_sidecar
        from proxy.config.reloadable import split_reload

        sidecar = self.sidecar
        try:
            config, policies = load_sidecar(sidecar.config.file)
        except ConfigError as exc:
            return self._reject(str(exc), trigger)
        except OSError as exc:
            return self._reject(f"{sidecar.config.file}: cannot read: {exc.strerror or exc}", trigger)
        if config.policy_file != sidecar.config.policy_file:
            # The policies just loaded come from the new file, which the watch and the running
            # config do not follow: reject the save whole rather than half-apply it.
            return self._reject(f"{config.file}: policy_file: changed from {sidecar.config.policy_file} to"
                                f" {config.policy_file}: a new policy file needs a restart (still enforcing"
                                " the old one)", trigger)
        config, restart = split_reload(sidecar.config, config)
        if policies is not None:
            try:
                check_policy_references(config, policies)
            except ConfigError as exc:
                kept = f" (listeners kept because changed {', '.join(restart)} need a restart)" if restart else ""
                return self._reject(f"{exc}{kept}", trigger)
        # One assignment publishes the policies and every reloadable setting together: a
        # connection never sees a new listener setting with the old policy set.
        sidecar.apply_reload(policies, config)
        logging.getLogger().setLevel(config.log.level.value.upper())
        if restart:
            _log.warning("reload (%s): changed %s need a restart to take effect (still running the old values);"
                         " every other change is applied", trigger, ", ".join(restart))
        self.status = ReloadStatus(loaded_at=time.time(), reloads=self.status.reloads + 1)
        self._count("ok", stale=False)
        rules = policies.rule_count() if policies is not None else 0
        _log.info("reload (%s): policy from %s in force (%d rules) for new connections", trigger,
                  config.policy_file, rules)
        return True

    def _reject(self, error: str, trigger: str) -> bool:
        self.status = ReloadStatus(stale=True, error=error, loaded_at=self.status.loaded_at,
                                   reloads=self.status.reloads)
        self._count("rejected", stale=True)
        _log.error("reload (%s) rejected, the previous policy keeps enforcing: %s", trigger, error)
        return False

    def _count(self, result: str, *, stale: bool) -> None:
        metrics = self.sidecar.metrics
        if metrics is not None:
            metrics.reloads.labels(result).inc()
            metrics.policy_stale.set(int(stale))

    # --- identity expiry -------------------------------------------------------

    def _watch_expiry(self, now: float) -> None:
        store = self.sidecar.store
        latest = store.latest
        expired = latest is not None and store.current(now) is None
        if expired and not self._expired_said:
            assert latest is not None
            state = store.state
            _log.error("our X.509-SVID %s expired at %s and no renewal arrived (identity source %s: %s):"
                       " refusing new connections (fail closed)", latest.spiffe_id,
                       time.strftime("%H:%M:%S", time.localtime(latest.not_after)), state.state.value,
                       state.last_error or "no error")
        self._expired_said = expired


def _stat(path: Path) -> FileStat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _digest(path: Path) -> str:
    """The content's sha256 (read only while a change is pending), or "" when unreadable."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
