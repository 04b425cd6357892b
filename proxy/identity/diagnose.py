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


def first_svid_diagnostic(store: IdentityStore, timeout: float) -> str:
    """The multi-line explanation raised when no SVID arrived within ``timeout``."""
    state = store.state
    lines = [f"no X.509-SVID within {timeout:g}s from {state.source or 'the identity source'} "
             f"(source state: {state.state.value}, {state.attempt} failed attempt(s)).",
             "Check:",
             f"  1. {_socket_check(state.source)}",
             "  2. a registration entry matches this workload; this process is "
             f"{process_facts()}"]
    if state.last_error:
        lines.append(f"  3. the last error was: {state.last_error}")
    elif store.last_rejection:
        lines.append(f"  3. the last update was refused: {store.last_rejection}")
    else:
        lines.append("  3. the server accepted the call but sent nothing yet (is the agent still starting?)")
    latest = store.latest
    if latest is not None:
        lines.append(f"  (an SVID for {latest.spiffe_id} was held but expired at {latest.not_after:.0f})")
    return "\n".join(lines)
