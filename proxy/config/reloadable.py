"""What a live reload may apply from a saved sidecar.yaml, and what only a restart can.

A save that changes a reloadable field (an outbound ``expect``, a listener's
limits or policy name, the log level, ``drain_timeout``) together with a
restart-only one (an address, the identity source, the runtime...) used to
drop the reloadable part: the running config was kept whole, so a tightened
``expect`` kept admitting the old peer while the log said the policy was in
force. ``split_reload`` instead builds the config to run: the new file's
reloadable fields on top of the running config's restart-only ones. Every
reloadable change takes effect; the restart-only ones are named so the
reloader can say they wait for a restart.

Listeners are matched by name. A listener only in the new file cannot start
without a restart; one only in the running config keeps serving (it is still
bound) with its running settings, so a policy rename that forgets it is
caught by the policy-reference check rather than silently denying.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from proxy.config.model import InboundListener, OutboundListener, SidecarConfig

_L = TypeVar("_L", InboundListener, OutboundListener)


def split_reload(running: SidecarConfig, saved: SidecarConfig) -> tuple[SidecarConfig, tuple[str, ...]]:
    """(the config to run now, the changed fields that need a restart).

    With no restart-only change the saved config is returned unchanged.
    """
    restart = running.restart_required(saved)
    if not restart:
        return saved, ()
    merged = dataclasses.replace(
        saved, identity=running.identity, runtime=running.runtime, admin=running.admin,
        policy_file=running.policy_file, transparent=running.transparent,
        first_svid_timeout=running.first_svid_timeout,
        log=dataclasses.replace(saved.log, access=running.log.access, format=running.log.format),
        limits=dataclasses.replace(saved.limits, buffer_size=running.limits.buffer_size),
        inbound=_keep_bound(running.inbound, saved.inbound, ("listen", "forward_to")),
        outbound=_keep_bound(running.outbound, saved.outbound, ("listen", "connect_to")))
    return merged, restart


def _keep_bound(running: tuple[_L, ...], saved: tuple[_L, ...], fixed: tuple[str, ...]) -> tuple[_L, ...]:
    """The running listeners (the bound set), each with the saved file's reloadable settings."""
    by_name = {x.name: x for x in saved}
    out = []
    for old in running:
        new = by_name.get(old.name)
        if new is None:
            out.append(old)
            continue
        keep = {name: getattr(old, name) for name in fixed}
        # Buffers are sized by the data plane at start, whatever a listener's limits say.
        keep["limits"] = dataclasses.replace(new.limits, buffer_size=old.limits.buffer_size)
        out.append(dataclasses.replace(new, **keep))
    return tuple(out)
