"""The five Workload API methods, each re-attesting its caller.

Every call (and every renewal of a stream) starts from what the kernel
says about the caller now, never from what it was granted before: a
process that setuid()s or whose binary was replaced loses entries that
no longer match and, with none left, gets PERMISSION_DENIED naming the
selectors the agent observed, so an operator can fix the entry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import trio

from proxy.agent.attest import Attestation, Attestor, Peer
from proxy.agent.issuer import Issuer
from proxy.agent.registry import Entry, format_selectors
from proxy.errors import AttestationError
from proxy.spiffe.id import SpiffeId
from proxy.workload_api import workload_pb2 as pb
from proxy.workload_api.grpc import GrpcStatusError, StatusCode

log = logging.getLogger("spiffe_sidecar.agent")


class Changes:
    """A broadcast "the bundles changed" signal for every open stream."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def current(self) -> trio.Event:
        """The event the next change will set (grab it before building a response)."""
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()


@dataclass
class AgentState:
    """What every connection shares."""

    issuer: Issuer
    attestor: Attestor
    changes: Changes = field(default_factory=Changes)


@dataclass
class Call:
    """One accepted call: who asked, what, and how to answer."""

    state: AgentState
    peer: Peer
    request: bytes
    send: Callable[[bytes], Awaitable[None]]


async def attest_entries(call: Call) -> tuple[Attestation, list[Entry]]:
    """Attest the caller now; PERMISSION_DENIED (with observed selectors) if no entry matches."""
    try:
        attestation = await trio.to_thread.run_sync(call.state.attestor.attest, call.peer)
    except AttestationError as exc:
        log.warning("attestation failed pid=%d: %s", call.peer.pid, exc)
        raise GrpcStatusError(StatusCode.PERMISSION_DENIED, f"attestation failed: {exc}") from None
    entries = call.state.issuer.registry.match(attestation.selectors)
    observed = format_selectors(attestation.selectors)
    if not entries:
        notes = "".join(f" ({n})" for n in attestation.notes)
        log.warning("denied pid=%d: no entry matches; observed selectors: %s%s", call.peer.pid, observed, notes)
        raise GrpcStatusError(StatusCode.PERMISSION_DENIED,
                              f"no registration entry matches this workload; observed selectors: {observed}{notes}")
    log.info("attested pid=%d selectors=[%s] -> %s", call.peer.pid, observed,
             ", ".join(str(e.spiffe_id) for e in entries))
    return attestation, entries


def _parse(message: type, data: bytes) -> object:
    msg = message()
    try:
        msg.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, f"malformed {message.__name__}") from None
    return msg


async def fetch_x509_svid(call: Call) -> None:
    """Stream: full X.509 state now, then on each renewal or bundle change."""
    _parse(pb.X509SVIDRequest, call.request)
    last = None
    while True:
        changed = call.state.changes.current()
        _, entries = await attest_entries(call)
        state = call.state.issuer.x509_state(entries, time.time())
        payload = state.response.SerializeToString(deterministic=True)
        if payload != last:
            await call.send(payload)
            last = payload
            log.info("x509 update sent pid=%d svids=%d", call.peer.pid, len(entries))
        await _wait(changed, state.renew_at)


async def _bundle_stream(call: Call, build: Callable[[list[Entry]], object]) -> None:
    last = None
    while True:
        changed = call.state.changes.current()
        _, entries = await attest_entries(call)
        payload = build(entries).SerializeToString(deterministic=True)  # type: ignore[attr-defined]
        if payload != last:
            await call.send(payload)
            last = payload
        await _wait(changed, float("inf"))


async def fetch_x509_bundles(call: Call) -> None:
    """Stream: the X.509 bundles visible to the caller, again on every change."""
    _parse(pb.X509BundlesRequest, call.request)
    await _bundle_stream(call, call.state.issuer.x509_bundles)


async def fetch_jwt_bundles(call: Call) -> None:
    """Stream: the JWKS of each trust domain visible to the caller, again on every change."""
    _parse(pb.JWTBundlesRequest, call.request)
    await _bundle_stream(call, call.state.issuer.jwt_bundles)


async def _wait(changed: trio.Event, wall_deadline: float) -> None:
    # A hair past the deadline, so the wake-up never finds the SVID "not yet due".
    delay = wall_deadline - time.time() + 0.02
    with trio.move_on_after(max(0.0, min(delay, 3600.0))):
        await changed.wait()


async def fetch_jwt_svid(call: Call) -> None:
    """Unary: JWT-SVIDs for the requested audience (one per entry, or the named ID)."""
    req = _parse(pb.JWTSVIDRequest, call.request)
    audience = [a for a in req.audience]  # type: ignore[attr-defined]
    if not audience or not all(audience):
        raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, "audience must be specified")
    wanted = None
    if req.spiffe_id:  # type: ignore[attr-defined]
        try:
            wanted = SpiffeId.parse(req.spiffe_id)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
    _, entries = await attest_entries(call)
    if wanted is not None:
        entries = [e for e in entries if e.spiffe_id == wanted]
        if not entries:
            raise GrpcStatusError(StatusCode.PERMISSION_DENIED, f"this workload is not entitled to {wanted}")
    resp = pb.JWTSVIDResponse()
    now = time.time()
    for entry in entries:
        resp.svids.append(call.state.issuer.mint_jwt(entry, audience, now))
    await call.send(resp.SerializeToString())


async def validate_jwt_svid(call: Call) -> None:
    """Unary: validate a JWT-SVID against the bundles the caller may see."""
    req = _parse(pb.ValidateJWTSVIDRequest, call.request)
    if not req.audience:  # type: ignore[attr-defined]
        raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, "audience must be specified")
    if not req.svid:  # type: ignore[attr-defined]
        raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, "svid must be specified")
    _, entries = await attest_entries(call)
    issuer = call.state.issuer
    sub, claims = issuer.validate_jwt(req.svid, req.audience,  # type: ignore[attr-defined]
                                      issuer.visible_domains(entries), time.time())
    resp = pb.ValidateJWTSVIDResponse(spiffe_id=str(sub))
    resp.claims.update(claims)
    await call.send(resp.SerializeToString())


#: method path -> (handler, streaming?)
METHODS: dict[str, Callable[[Call], Awaitable[None]]] = {
    "/SpiffeWorkloadAPI/FetchX509SVID": fetch_x509_svid,
    "/SpiffeWorkloadAPI/FetchX509Bundles": fetch_x509_bundles,
    "/SpiffeWorkloadAPI/FetchJWTSVID": fetch_jwt_svid,
    "/SpiffeWorkloadAPI/FetchJWTBundles": fetch_jwt_bundles,
    "/SpiffeWorkloadAPI/ValidateJWTSVID": validate_jwt_svid,
}
