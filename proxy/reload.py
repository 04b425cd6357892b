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
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.sidecar import Sidecar

_log = logging.getLogger("spiffe_sidecar")
#: Poll period of the file watch: a saved policy is in force well within a second.
WATCH_INTERVAL = 0.2


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


class Reloader:
    """Watches sidecar.yaml and the policy file; validates then swaps (see the module docstring).

    Args:
        sidecar: whose ``policies`` and ``config`` are swapped.
        interval: the file watch's poll period in seconds.
    """

    def __init__(self, sidecar: Sidecar, *, interval: float = WATCH_INTERVAL) -> None:
        self.sidecar = sidecar
        self.interval = interval
        self.status = ReloadStatus(loaded_at=time.time())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requested = False
        self._seen = self._fingerprint()
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

    def request(self) -> None:
        """Ask for a reload now (SIGHUP); safe from a signal handler or any thread."""
        self._requested = True
        self._wake.set()

    # --- the thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
            except Exception:  # the watch must outlive any surprise; the data path does not depend on it
                _log.exception("reload watch: unexpected error")

    def _tick(self) -> None:
        seen = self._fingerprint()
        if self._requested or seen != self._seen:
            trigger = "SIGHUP" if self._requested else "file change"
            self._requested = False
            self._seen = seen
            self.reload(trigger)
        self._watch_expiry(time.time())

    def _fingerprint(self) -> tuple[Any, ...]:
        config = self.sidecar.config
        return tuple(_stat(Path(p)) for p in (config.file, config.policy_file) if p is not None)

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
                       time.strftime("%H:%M:%S", time.localtime(latest.not_after)), state.state,
                       state.last_error or "no error")
        self._expired_said = expired


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
