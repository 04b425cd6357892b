"""When to offer a cached TLS session to an upstream, and when to stop (issue 10.3).

Some servers cannot resume: a pyOpenSSL server that requires client
certificates and names no session-id context (py-spiffe's ``spiffe-tls``
0.4.0) aborts the handshake with ``internal error`` whenever a client
offers a session. The outbound path then retries once with a full
handshake inside the same budget (runtime/runner.py), drops every session
cached for that upstream, and asks this book whether to offer one next
time: not until the upstream's back-off has passed. The back-off doubles
with each refusal (up to ``MAX_BACKOFF``) and is forgotten when a
resumption to that upstream succeeds. Pure data: ``now`` comes in.
"""

from __future__ import annotations

from collections import OrderedDict

#: Seconds without offering sessions after the first refusal; doubled per refusal.
INITIAL_BACKOFF = 60.0
MAX_BACKOFF = 3600.0
#: Upstreams remembered (each an entry of two floats); the longest-untouched goes first.
MAX_UPSTREAMS = 4096


class ResumptionBackoff:
    """Upstreams (session keys) that refused a resumption, and until when none is offered to them."""

    def __init__(self, *, initial: float = INITIAL_BACKOFF, maximum: float = MAX_BACKOFF,
                 max_upstreams: int = MAX_UPSTREAMS) -> None:
        self._initial, self._maximum, self._max = initial, maximum, max_upstreams
        self._until: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (until, last back-off)

    @property
    def backing_off(self) -> bool:
        """True when some upstream has refused a resumption (the hot path's one test)."""
        return bool(self._until)

    def may_offer(self, key: str, now: float) -> bool:
        """True when a session may be offered to ``key`` at ``now``."""
        entry = self._until.get(key)
        return entry is None or now >= entry[0]

    def refused(self, key: str, now: float) -> float:
        """``key`` refused a resumption at ``now``: back off (doubling); returns the seconds."""
        previous = self._until.pop(key, None)
        backoff = self._initial if previous is None else min(self._maximum, previous[1] * 2)
        self._until[key] = (now + backoff, backoff)
        while len(self._until) > self._max:
            self._until.popitem(last=False)
        return backoff

    def resumed(self, key: str) -> None:
        """A resumption to ``key`` succeeded: it can resume after all; forget its back-off."""
        if self._until:
            self._until.pop(key, None)
