"""New TLS contexts for each identity snapshot, swapped in as one reference.

``ContextSwap`` subscribes to an ``IdentityStore``. For every new snapshot
it builds a server and a client context once, from the snapshot's DER
material, and replaces ``current`` with the new pair. A context is never
mutated after it is built (unlike py-spiffe's spiffe-tls, which adds CAs
to a live store and never removes any): a connection that took the old
pair keeps using it to the end, new connections take the new one, and an
authority removed from a bundle is simply absent from the next pair.

A snapshot whose contexts cannot be built (the engine refuses the key,
say) leaves the previous pair in place and is recorded in ``last_error``.
A withdrawal (redaction, PERMISSION_DENIED) clears ``current``: no context,
so inbound fails closed.

One thing does reach established connections: ``client_identity``, the
engine's ClientIdentity cell, always names the newest client context, and
every client context answers a server's post-handshake certificate request
from it (issue 11.2). A long-lived outbound connection made under an old
snapshot thus presents the renewed SVID when the upstream re-authenticates
it, without touching its own (immutable) context.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from proxy.identity import rotation
from proxy.identity.snapshot import IdentitySnapshot
from proxy.identity.store import IdentityStore
from proxy.tls.contract import ClientContext, ClientIdentity, Engine, ServerContext
from proxy.tls.material import TlsMaterial

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContextPair:
    """The server and client TLS contexts of one identity snapshot.

    Attributes:
        server: ``engine.ServerContext(material)``.
        client: ``engine.ClientContext(material)``.
        material: what they were built from (spiffe_id, not_after, generation).
    """

    server: ServerContext
    client: ClientContext
    material: TlsMaterial

    @property
    def generation(self) -> int:
        """The snapshot generation the pair was built from."""
        return self.material.generation

    def usable_at(self, now: float) -> bool:
        """False once our certificate inside the pair expired."""
        return not rotation.is_expired(self.material.not_after, now)


class ContextSwap:
    """Keeps ``current`` at the context pair of the store's latest snapshot.

    Args:
        engine: a TLS engine module (``proxy.tls.engine.load_engine()``).
        store: the store to follow; its current snapshot (if any) is built
            at once, then every publication rebuilds.
        now: the time to judge the store's snapshot at start (None takes
            whatever the store last published).
    """

    def __init__(self, engine: Engine, store: IdentityStore, now: float | None = None) -> None:
        self._engine = engine
        self.client_identity: ClientIdentity = engine.ClientIdentity()
        self._current: ContextPair | None = None
        self.last_error: str | None = None
        self._listeners: list[Callable[[ContextPair | None], None]] = []
        initial = store.latest if now is None else store.current(now)
        if initial is not None:
            self._on_snapshot(initial)
        self._unsubscribe = store.subscribe(self._on_snapshot)

    @property
    def current(self) -> ContextPair | None:
        """The pair new connections should use, or None before the first SVID."""
        return self._current

    def current_at(self, now: float) -> ContextPair | None:
        """``current`` unless our certificate in it has expired (fail closed)."""
        pair = self._current
        return pair if pair is not None and pair.usable_at(now) else None

    def on_swap(self, callback: Callable[[ContextPair | None], None]) -> None:
        """Also call ``callback`` after each swap (e.g. to drop a session cache)."""
        self._listeners.append(callback)

    def close(self) -> None:
        """Stop following the store (the current pair stays readable)."""
        self._unsubscribe()

    def build(self, snapshot: IdentitySnapshot) -> ContextPair:
        """Build (but do not install) the pair for ``snapshot``.

        Raises:
            Exception: whatever the engine raises for unusable material.
        """
        material = snapshot.to_tls_material()
        client = self._engine.ClientContext(material, self.client_identity)
        return ContextPair(server=self._engine.ServerContext(material), client=client, material=material)

    def _on_snapshot(self, snapshot: IdentitySnapshot | None) -> None:
        if snapshot is None:
            self._install(None)
            return
        try:
            pair = self.build(snapshot)
        except Exception as exc:  # keep serving with the previous pair
            self.last_error = f"cannot build TLS contexts for generation {snapshot.generation}: {exc}"
            _log.error("%s", self.last_error)
            return
        self.last_error = None
        self._install(pair)

    def _install(self, pair: ContextPair | None) -> None:
        self._current = pair
        if pair is not None:
            self.client_identity.publish(pair.client)
        for callback in list(self._listeners):
            callback(pair)
