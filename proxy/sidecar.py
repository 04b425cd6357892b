"""The composition root: config + identity + TLS contexts + policy + listeners.

``Sidecar`` wires the parts together and nothing else: the identity
source publishes snapshots to an ``IdentityStore``; a ``ContextSwap``
builds a server/client context pair per snapshot; each listener's plan
reads the current pair and the current policy when a connection is
accepted (so rotations and reloads reach new connections only); the
runtime driver named by ``config.runtime`` serves the plans.

Fail closed: listeners are bound at start and refuse every connection
(CloseReason.NOT_READY) until the first SVID arrives; start-up waits for
it at most ``config.first_svid_timeout`` seconds.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from typing import Any, Callable, TypeVar

from proxy.operations.admin import AdminServer
from proxy.config.model import (
    HostPort,
    IdentityConfig,
    InboundListener,
    LogFormat,
    OutboundListener,
    Runtime,
    SidecarConfig,
)
from proxy.config.transparent import TRANSPARENT_INBOUND, TRANSPARENT_OUTBOUND, TransparentInbound, TransparentOutbound
from proxy.connection.close import ConnectionRecord
from proxy.connection.machine import ConnectionSpec, Direction
from proxy.connection.transparent import transparent_inbound_spec, transparent_outbound_spec
from proxy.connection.reauth import ReauthRecord
from proxy.identity.snapshot import IdentitySnapshot
from proxy.identity.store import IdentityStore
from proxy.identity.swap import ContextPair, ContextSwap
from proxy.operations.live import LiveSettings, inbound_spec, limits_keywords
from proxy.operations.metrics import Metrics
from proxy.policy.evaluate import PolicySet
from proxy.operations.reload import Reloader
from proxy.runtime.base import DataPlane, ListenerPlan
from proxy.runtime.sockets import close_quietly, open_listening_socket
from proxy.tls.contract import Engine
from proxy.errors import ListenError, SidecarError
from proxy.tls.engine import load_engine

_log = logging.getLogger("spiffe_sidecar")

class Sidecar:
    """One sidecar process's parts, wired together (see the module docstring).

    Args:
        config: the validated configuration.
        policies: the policy set (None when there are no inbound listeners).
        engine: a TLS engine module (default: ``load_engine()``).
        emit: where connection records go (default: per ``config.log.access``).
    """

    def __init__(self, config: SidecarConfig, policies: PolicySet | None, *, engine: Engine | None = None,
                 emit: Callable[[ConnectionRecord], None] | None = None) -> None:
        self.live = LiveSettings.build(config, policies)  # one reference: a reload swaps it whole
        self.engine = engine if engine is not None else load_engine()
        # Labelled now: the admin endpoint may be asked before the source task runs (a race /ready lost).
        self.store = IdentityStore(source=source_label(config.identity))
        self.swap = ContextSwap(self.engine, self.store)
        self.metrics: Metrics | None = (Metrics(self.store, peer_id_labels=config.admin.peer_id_labels)
                                        if config.admin is not None else None)
        sink, reauth_sink = _sinks(config, emit)
        self.emit = sink if self.metrics is None else _tee(sink, self.metrics.observe)
        self.emit_reauth = reauth_sink if self.metrics is None else _tee(reauth_sink, self.metrics.observe_reauth)
        self.first_svid_timeout = config.first_svid_timeout  # read once: only start-up waits for it
        t = config.transparent
        # The loop guard's host addresses: a resolver call, so once here before any event loop runs,
        # never per connection (transparent listeners are fixed until a restart).
        self.local_addresses = local_addresses() if t is not None and t.outbound is not None else frozenset()
        self.plane: DataPlane | None = None
        self.draining = False  # set at SIGTERM: /ready answers 503 while connections finish
        self.reloader: Reloader | None = None
        self.admin: AdminServer | None = None
        self._choice_hinted = False  # "several SVIDs, none chosen" is said once

    # --- listeners -------------------------------------------------------

    def open_data_plane(self) -> DataPlane:
        """Bind every listener (they refuse until the first SVID); the caller serves and closes it."""
        plans: list[ListenerPlan] = []
        try:
            for inbound in self.config.inbound:
                plans.append(self._inbound_plan(inbound))
            for outbound in self.config.outbound:
                plans.append(self._outbound_plan(outbound))
            transparent = self.config.transparent
            if transparent is not None and transparent.inbound is not None:
                plans.append(self._transparent_inbound_plan(transparent.inbound))
            if transparent is not None and transparent.outbound is not None:
                plans.append(self._transparent_outbound_plan(transparent.outbound))
        except OSError:
            for plan in plans:
                close_quietly(plan.sock)
            raise
        self.plane = DataPlane(engine=self.engine, listeners=plans, buffer_size=self.config.limits.buffer_size,
                               emit=self.emit, emit_reauth=self.emit_reauth)
        if self.metrics is not None:
            self.metrics.plane = self.plane
            self.plane.handshake_observer = self.metrics.observe_handshake
        self._wire_http(self.plane)
        return self.plane

    def _wire_http(self, plane: DataPlane) -> None:
        """Request records and metrics for protocol: http listeners (nothing when there are none)."""
        listeners: list[InboundListener | OutboundListener] = [*self.config.inbound, *self.config.outbound]
        if not any(x.http is not None for x in listeners):
            return
        from proxy.runtime.http.records import HttpMetrics, request_sink

        plane.http_metrics = HttpMetrics(self.metrics.registry) if self.metrics is not None else None
        plane.emit_request = request_sink(self.config.log.access, plane.http_metrics)

    # --- operations (admin endpoint, reload watch) -------------------------

    def start_operations(self) -> None:
        """Bind and serve the admin endpoint (if configured) and start the reload watch.

        Raises:
            OSError: the admin address cannot be bound (start-up fails like a listener's would).
        """
        if self.config.admin is not None:
            self.admin = AdminServer(self)
            self.admin.start()
        self.reloader = Reloader(self)
        self.reloader.start()

    def begin_drain(self) -> None:
        """SIGTERM: from now on /ready says not ready; the driver stops accepting."""
        self.draining = True
        if self.metrics is not None:
            self.metrics.draining.set(1)
        _log.info("draining: not accepting new connections; %d open, up to %gs to finish",
                  self.plane.active if self.plane else 0, self.config.drain_timeout)

    def stop_operations(self) -> None:
        """Stop the reload watch and the admin endpoint (after the drain, so probes see it)."""
        if self.reloader is not None:
            self.reloader.stop()
        if self.admin is not None:
            self.admin.close()

    @property
    def config(self) -> SidecarConfig:
        """The configuration in force for new connections."""
        return self.live.config

    @property
    def policies(self) -> PolicySet | None:
        """The policy set in force for new connections."""
        return self.live.policies

    def apply_reload(self, policies: PolicySet | None, config: SidecarConfig | None = None) -> None:
        """Publish a reloaded policy set, and config when it needs no restart, in one assignment.

        With a config, inbound policy names, limits and outbound ``expect`` reach new
        connections too (listeners are looked up by name per accept).
        """
        self.live = LiveSettings.build(config if config is not None else self.live.config, policies)

    def _inbound_plan(self, listener: InboundListener) -> ListenerPlan:
        sock = _listen(listener.name, listener.listen)
        name = listener.name

        def spec(destination: tuple[str, int] | None) -> ConnectionSpec:
            live = self.live  # read once: a reload swaps policies and listeners together
            found = live.inbound_specs.get(name)  # built with the reload, not per accept
            return found if found is not None else inbound_spec(listener, live.policies)

        def handshake_limits() -> tuple[int, int]:
            limits = self.live.inbound[name].limits  # reloadable: read per accept
            return limits.max_pending_handshakes, limits.max_pending_handshakes_per_source

        return ListenerPlan(name=name, direction=Direction.INBOUND, sock=sock, spec=spec,
                            context=self._context, handshake_limits=handshake_limits)

    def _outbound_plan(self, listener: OutboundListener) -> ListenerPlan:
        sock = _listen(listener.name, listener.listen)
        name = listener.name
        return ListenerPlan(name=name, direction=Direction.OUTBOUND, sock=sock,
                            spec=lambda destination: self.live.outbound_specs[name],
                            context=self._context)

    def _transparent_inbound_plan(self, tin: TransparentInbound) -> ListenerPlan:
        sock = _listen(TRANSPARENT_INBOUND, tin.listen, transparent=tin.tproxy)

        def spec(destination: tuple[str, int] | None) -> ConnectionSpec:
            # routed ports: built with the reload, read once per accept
            return transparent_inbound_spec(self.live.transparent_inbound_specs, destination)

        pending = (tin.limits.max_pending_handshakes, tin.limits.max_pending_handshakes_per_source)
        return ListenerPlan(name=TRANSPARENT_INBOUND, direction=Direction.INBOUND, sock=sock, spec=spec,
                            context=self._context, transparent=True, handshake_limits=lambda: pending)

    def _transparent_outbound_plan(self, tout: TransparentOutbound) -> ListenerPlan:
        sock = _listen(TRANSPARENT_OUTBOUND, tout.listen)
        # Transparent listeners are fixed until a restart: the global tls settings, read once.
        limits = {**limits_keywords(tout.limits), "session_resumption": self.config.tls.session_resumption}
        spec = functools.partial(transparent_outbound_spec, tout, own_ports=self._own_listen_ports(),
                                 local_addresses=self.local_addresses, limits=limits)
        return ListenerPlan(name=TRANSPARENT_OUTBOUND, direction=Direction.OUTBOUND, sock=sock, spec=spec,
                            context=self._context, transparent=True)

    def _own_listen_ports(self) -> frozenset[int]:
        """Ports this sidecar listens on: an original destination among them is a loop."""
        c, t = self.config, self.config.transparent
        ports = [x.listen.port for x in c.inbound] + [x.listen.port for x in c.outbound]
        if t is not None and t.inbound is not None:
            ports.append(t.inbound.listen.port)
        if t is not None and t.outbound is not None:
            ports.append(t.outbound.listen.port)
        return frozenset(ports)

    def _context(self) -> ContextPair | None:
        return self.swap.current_at(time.time())

    # --- identity ----------------------------------------------------------

    def identity_source(self) -> Callable[..., Any]:
        """The trio task that feeds the store (Workload API stream or file poller); never returns."""
        identity = self.config.identity
        if identity.files is not None:
            from proxy.identity.files import SvidFiles, run_file_source

            f = identity.files
            files = SvidFiles(cert=str(f.cert), key=str(f.key), bundle=str(f.bundle),
                              federated={td: str(p) for td, p in f.federated_bundles.items()})
            return functools.partial(run_file_source, files, self.store, require_first=True)
        from proxy.identity.source import run_x509_source

        on_state = self.metrics.on_source_state if self.metrics is not None else None
        return functools.partial(run_x509_source, identity.workload_api, self.store, on_state=on_state,
                                 want=identity.spiffe_id)

    def describe_listeners(self) -> str:
        """One phrase per listener for the ready line."""
        parts = [f"inbound {x.name} {x.listen} -> {x.forward_to} (policy {x.policy})" for x in self.config.inbound]
        parts += [f"outbound {x.name} {x.listen} -> {x.connect_to} (expect {x.expect.describe()})"
                  for x in self.config.outbound]
        t = self.config.transparent
        if t is not None and t.inbound is not None:
            parts.append(f"transparent inbound {t.inbound.listen} ({t.inbound.mode.value}, ports "
                         + ", ".join(str(p.port) for p in t.inbound.ports) + ")")
        if t is not None and t.outbound is not None:
            parts.append(f"transparent outbound {t.outbound.listen} ({len(t.outbound.routes)} routes, "
                         f"unmatched: {t.outbound.unmatched.value})")
        return "; ".join(parts) or "no listeners"

    def log_identity(self, snapshot: IdentitySnapshot | None) -> None:
        """Log each identity change (the demo counts rotations from these lines)."""
        if snapshot is None:
            _log.warning("identity withdrawn: %s (failing closed)", self.store.last_rejection or "no SVID")
            return
        _log.info("identity generation %d: %s valid until %s (trust domains: %s)", snapshot.generation,
                  snapshot.spiffe_id, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot.not_after)),
                  ", ".join(snapshot.trust_domains))
        if len(snapshot.svids) > 1 and self.config.identity.spiffe_id is None and not self._choice_hinted:
            self._choice_hinted = True  # once: the same offer comes with every renewal
            offered = ", ".join(str(s.spiffe_id) for s in snapshot.svids)
            _log.warning("the Workload API offers %d X.509-SVIDs (%s); presenting the first, %s. To present "
                         "another, set identity.spiffe_id in %s (or SPIFFE_SIDECAR_IDENTITY_SPIFFE_ID)",
                         len(snapshot.svids), offered, snapshot.spiffe_id, self.config.file)

    def log_ready(self) -> None:
        """The one line that says the sidecar serves (tests and the demo wait for it)."""
        snapshot = self.store.latest
        if self.swap.current is None:
            _log.error("not ready: an SVID arrived but no TLS context could be built: %s (failing closed)",
                       self.swap.last_error)
            return
        if self.config.transparent is not None:
            import os

            uid, gid = os.getuid(), os.getgid()
            level = logging.WARNING if uid == 0 else logging.INFO
            _log.log(level, "transparent mode: running as uid %d gid %d; the interception rules must exempt this"
                     " %s (--proxy-uid/--proxy-gid) or our own upstream connections loop back to us",
                     uid, gid, "gid (uid 0 is shared by every root process)" if uid == 0 else "uid")
        _log.info("ready: %s as %s, runtime %s, engine %s; %s", "serving",
                  snapshot.spiffe_id if snapshot else "?", self.config.runtime.value, self.engine.NAME,
                  self.describe_listeners())








def _listen(name: str, address: HostPort, *, transparent: bool = False) -> socket.socket:
    """Bind one listener; a failure names the listener and its address (ListenError)."""
    try:
        return open_listening_socket(address.host, address.port, transparent=transparent)
    except ListenError:
        raise
    except OSError as exc:
        raise ListenError(name, str(address), exc) from None


def source_label(identity: IdentityConfig) -> str:
    """Where the SVID comes from, written as the source itself reports it."""
    if identity.files is not None:
        return f"files:{identity.files.cert}"
    from proxy.identity.address import parse_address

    try:
        return str(parse_address(identity.workload_api)) if identity.workload_api else ""
    except SidecarError:
        return identity.workload_api or ""


def local_addresses() -> frozenset[str]:
    """This host's addresses by its host name (a resolver call that may block: call it at start only)."""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        return frozenset()


R = TypeVar("R")


def _tee(first: Callable[[R], None], second: Callable[[R], None]) -> Callable[[R], None]:
    def both(record: R) -> None:
        first(record)
        second(record)
    return both


def _sinks(config: SidecarConfig, emit: Callable[[ConnectionRecord], None] | None
           ) -> tuple[Callable[[ConnectionRecord], None], Callable[[ReauthRecord], None]]:
    """Connection and re-authentication records: the access log (or ``emit`` and the log's reauth lines)."""
    from proxy.operations.accesslog import open_sinks

    sink, reauth_sink = open_sinks(config.log.access, config.log.format)
    return (emit if emit is not None else sink), reauth_sink


def access_log_sink(target: str, fmt: LogFormat = LogFormat.AUTO) -> Callable[[ConnectionRecord], None]:
    """Where connection records go (see ``proxy.operations.accesslog.open_sink``)."""
    from proxy.operations.accesslog import open_sink

    return open_sink(target, fmt)


def run_sidecar(config: SidecarConfig, policies: PolicySet | None) -> int:
    """Serve until SIGINT/SIGTERM on the configured runtime; returns the exit code."""
    sidecar = Sidecar(config, policies)
    if config.runtime is Runtime.UVLOOP:
        from proxy.runtime import uvloop_driver

        return uvloop_driver.run_sidecar(sidecar)
    from proxy.runtime import trio_driver

    return trio_driver.run_sidecar(sidecar)
