""""Why do I have no SVID?": the diagnostic printed when the first SVID does not come.

SPIRE answers an unregistered workload with PERMISSION_DENIED "no identity
issued" and nothing else (spire#1108), so operators guess. We print what
we can see from here: whether the socket exists, what the server last
said (our agent names the selectors it observed), and the facts about
this process an entry's selectors are matched against (uid, gid,
executable path and its sha256), so they can be compared with the entry.
"""

from __future__ import annotations

import hashlib
import os
import sys

from proxy.identity.address import parse_address
from proxy.identity.store import IdentityStore

#: Hash the executable only when it is at most this big (hashing is I/O).
MAX_HASH_BYTES = 64 * 1024 * 1024


def _socket_check(source: str) -> str:
    try:
        address = parse_address(source)
    except Exception:
        return f"the identity source is {source or 'unknown'}"
    if address.scheme != "unix":
        return f"the Workload API address is {address} (TCP): is something listening there?"
    if not os.path.exists(address.path):
        return (f"the socket {address.path} does NOT exist: is the agent running, and is the path right "
                "(--address or SPIFFE_ENDPOINT_SOCKET; in a container, is the socket's directory mounted)?")
    return f"the socket {address.path} exists: is an agent listening on it (not a stale file)?"


def process_facts() -> str:
    """uid/gid/executable of this process, as a workload attestor would see them."""
    exe = os.path.realpath("/proc/self/exe") if os.path.exists("/proc/self/exe") else sys.executable
    digest = "not hashed"
    try:
        if os.path.getsize(exe) <= MAX_HASH_BYTES:
            with open(exe, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
    except OSError as exc:
        digest = f"unreadable ({exc.strerror})"
    return (f"unix:uid:{os.getuid()} unix:gid:{os.getgid()} unix:path:{exe} unix:sha256:{digest} "
            f"(pid {os.getpid()})")


def _cause(source: str, error: str) -> str:
    """Why there is no SVID, from what the source last said: one of the checklists below.

    The source state carries the error as text (verbatim from the server, with
    the gRPC status name our client puts first), so the status is read there.
    """
    if source.startswith("files:"):
        return "files"
    if "PERMISSION_DENIED" in error:
        return "refused"
    if "no X.509-SVID matches" in error:
        return "not_offered"
    if not error or "UNAVAILABLE" in error or "DEADLINE_EXCEEDED" in error:
        return "unreachable"
    return "other"


def first_svid_diagnostic(store: IdentityStore, timeout: float) -> str:
    """The multi-line explanation raised when no SVID arrived within ``timeout``.

    Only the checks that fit the cause are listed: a registration hint for an
    agent that refused us, the socket for one that could not be reached, the
    offered SVIDs for an identity.spiffe_id the agent does not grant.
    """
    state = store.state
    error = state.last_error or ""
    source = state.source or "the identity source"
    lines = [f"no X.509-SVID within {timeout:g}s from {source} "
             f"(source state: {state.state.value}, {state.attempt} failed attempt(s)).", "Check:"]
    cause = _cause(state.source, error)
    if cause == "files":
        lines.append(f"  - the files: {error or store.last_rejection or 'no usable SVID'}")
    elif cause == "refused":
        lines += [f"  - the Workload API answered and refused this process: {error}",
                  f"  - a registration entry must match this workload (all its selectors); this process is "
                  f"{process_facts()}"]
    elif cause == "not_offered":
        lines += [f"  - the Workload API does not offer the SVID identity.spiffe_id names: {error}",
                  "  - set identity.spiffe_id to one it offers, or register an entry for the one you want"]
    elif cause == "unreachable":
        lines.append(f"  - {_socket_check(state.source)}")
        if error:
            lines.append(f"  - the last error was: {error}")
        elif store.last_rejection:
            lines.append(f"  - the last update was refused: {store.last_rejection}")
        else:
            lines.append("  - the server accepted the call but sent nothing yet (is the agent still starting?)")
    else:
        lines.append(f"  - the last error was: {error}")
    latest = store.latest
    if latest is not None:
        lines.append(f"  (an SVID for {latest.spiffe_id} was held but expired at {latest.not_after:.0f})")
    return "\n".join(lines)


def waiting_note(store: IdentityStore, waited: float, timeout: float) -> str:
    """One progress line while start-up waits for the first SVID (so the wait is never silent)."""
    state = store.state
    error = f"; last error: {state.last_error}" if state.last_error else ""
    return (f"waiting for the first X.509-SVID from {state.source or 'the identity source'} ({waited:.0f}s): "
            f"{state.state.value}, {state.attempt} failed attempt(s){error}; giving up in {max(0.0, timeout - waited):.0f}s")
