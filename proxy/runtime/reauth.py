"""Re-authentication of a relaying connection, for the per-connection runner (issue 11.2).

The decisions are the core's (proxy/connection/reauth.py: when to ask,
what an answer means); this module only asks the engine, waits for the
answer, and reports it as events. Two places relay, so two ways to wait:

- on the event loop (the reference engine; the compiled one with
  SPIFFE_SIDECAR_RELAY_THREAD=0), ``watch_expiry`` is the connection's
  timer task: it sleeps until the lifetime deadline or the next request,
  sends the request when no TLS write is pending (OpenSSL cannot put a
  handshake record in the middle of a partly written one), then looks for
  the answer every POLL seconds while the relay's own pumps read it. The
  polling exists only between a request and its answer, one round trip;
- on the relay thread the hub sends the request and watches the answer
  itself (proxy/_fastpath_hub.pxi) and wakes the connection's task with a
  notice; ``on_notice`` turns that into the same events.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from proxy.connection import events as ev
from proxy.connection.actions import RearmRelay
from proxy.connection.machine import ConnectionState
from proxy.errors import HandshakeFailure, SidecarError, TlsError, VerificationError
from proxy.tls.contract import DONE, WANT_READ, HubEngine, TlsConnection

if TYPE_CHECKING:
    from proxy.runtime.runner import _Runner

#: Seconds between looks for the answer (and for a moment with no TLS write pending).
POLL = 0.02
#: The reason of a re-authentication the peer did not answer before its certificate expired.
NO_ANSWER = HandshakeFailure.TIMEOUT


async def watch_expiry(r: _Runner, deadline: float | None, kind: ev.DeadlineKind, reauth_at: float | None) -> None:
    """The event-loop relay's lifetime deadline and re-authentications, until the connection closes."""
    while r.conn.state is ConnectionState.RELAYING:
        now = time.time()
        if deadline is not None and now >= deadline:
            r.feed(ev.DeadlineExpired(now, kind))
            return
        if reauth_at is not None and now >= reauth_at:
            timers = await reauthenticate(r, deadline)
            if timers is None:
                reauth_at = None  # cannot be asked, or closing
            else:
                deadline, kind, reauth_at = timers.lifetime_deadline, timers.lifetime_kind, timers.reauth_at
            continue
        wake = min((t for t in (deadline, reauth_at) if t is not None), default=None)
        if wake is None:
            return
        await r.io.sleep(max(0.0, wake - now))


async def reauthenticate(r: _Runner, deadline: float | None) -> RearmRelay | None:
    """One request and its answer on the event loop; the new timers, or None (unsupported, or closing)."""
    tls, fd = r.tls, r.tls_fd
    assert tls is not None
    while r.tls_write_pending():
        if _past(deadline):
            _no_answer(r, "no moment without a pending TLS write before the peer's certificate expired")
            return None
        await r.io.sleep(POLL)
    try:
        step = tls.request_reauth()
        while step not in (DONE, r.plane.engine.CANNOT_REAUTH):
            await r.wait_tls(fd, readable=step == WANT_READ)
            step = tls.request_reauth()
        if step == r.plane.engine.CANNOT_REAUTH:
            r.feed(ev.ReauthUnsupported(time.time(), "the peer did not offer TLS 1.3 post-handshake authentication"))
            return None
        while not tls.reauth_answered():
            if _past(deadline):
                _no_answer(r, "the peer did not answer the certificate request before its certificate expired")
                return None
            await r.io.sleep(POLL)
    except VerificationError as exc:
        r.feed(ev.ReauthFailed(time.time(), exc.reason, exc.detail))
        return None
    except (SidecarError, OSError) as exc:
        r.feed(failure(tls, exc))
        return None
    return reauthenticated(r)


def on_notice(r: _Runner, engine: HubEngine, notice: int) -> RearmRelay | None:
    """A notice from the relay thread: the peer answered in full, or cannot be asked."""
    if notice == engine.NOTICE_CANNOT_REAUTH:
        r.feed(ev.ReauthUnsupported(time.time(), "the peer did not offer TLS 1.3 post-handshake authentication"))
        return None
    if notice == engine.NOTICE_REAUTHENTICATED:
        return reauthenticated(r)
    return None


def reauthenticated(r: _Runner) -> RearmRelay | None:
    """Report the verified answer; the core re-authorizes it against the policy in force now."""
    tls = r.tls
    assert tls is not None
    r.rearmed = None
    authorize = r.plan.spec(r.destination).authorize
    r.feed(ev.PeerReauthenticated(time.time(), tls.peer_spiffe_id, tls.peer_not_after, authorize))
    return r.rearmed


def failure(tls: TlsConnection | None, exc: BaseException | None) -> ev.ReauthFailed:
    """A TLS or socket failure during a re-authentication, with the verification's reason when it was one."""
    refused = tls.verify_failure if tls is not None else None
    if isinstance(refused, VerificationError):
        return ev.ReauthFailed(time.time(), refused.reason, refused.detail)
    if isinstance(exc, TlsError) and isinstance(exc.reason, HandshakeFailure):
        return ev.ReauthFailed(time.time(), exc.reason, exc.detail)
    return ev.ReauthFailed(time.time(), HandshakeFailure.PEER_CLOSED, f"the connection broke: {exc}")


def _no_answer(r: _Runner, detail: str) -> None:
    r.feed(ev.ReauthFailed(time.time(), NO_ANSWER, detail))


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.time() >= deadline
