"""Install, remove and show the interception rules with the host's iptables.

This is the init-container job (`spiffe-sidecar iptables install`). It never
edits rules one command at a time: it reads the nat table with iptables-save,
renders the wanted state (rules.py) and applies it in one transaction with
`iptables-restore --noflush`, so a failure leaves the table as it was and a
second install rewrites rather than duplicates.

Two iptables back ends exist and a host uses one: iptables-nft (nf_tables) or
iptables-legacy (x_tables). Rules written with the wrong one are invisible to
the other tools and may be evaluated in an unexpected order, so `--mode auto`
picks the one already in use: the one holding our chains, else the one with
more rules (the Kubernetes iptables-wrapper heuristic), else nft.

REDIRECT lives in the nat table; TPROXY (--inbound-mode tproxy) puts inbound
in the mangle table and needs policy routing (routing.py), so every command
here looks at both tables and at our ip rules and routes.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable

from proxy.errors import InterceptionError
from proxy.interception import routing
from proxy.interception.rules import InterceptionSpec, render_install
from proxy.interception.table import TABLES, TableState, parse_table_state, render_remove, render_show

MODES = ("auto", "nft", "legacy")
_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Backend:
    """One iptables back end for one address family.

    Attributes:
        kind: "nft" or "legacy".
        family: 4 or 6.
        save: path of the *-save binary; restore: path of the *-restore binary.
    """

    kind: str
    family: int
    save: str
    restore: str

    @property
    def label(self) -> str:
        """Human name, e.g. "iptables-nft" or "ip6tables-legacy"."""
        return f"{'ip6tables' if self.family == 6 else 'iptables'}-{self.kind}"


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InterceptionError(f"{argv[0]} did not finish within {_TIMEOUT_S:.0f}s (xtables lock held?)", " ".join(argv)) from None
    except OSError as exc:
        raise InterceptionError(f"cannot run {argv[0]}: {exc.strerror or exc}", " ".join(argv)) from None


def _plain_kind(save: str) -> str | None:
    """Which back end a plain `iptables-save` is ("nft"/"legacy"), from its version line."""
    result = _run([save, "--version"])
    text = result.stdout + result.stderr
    if "nf_tables" in text:
        return "nft"
    return "legacy" if "legacy" in text or result.returncode == 0 else None


def available_backends(family: int) -> list[Backend]:
    """The back ends installed for a family, nft first."""
    base = "ip6tables" if family == 6 else "iptables"
    found: list[Backend] = []
    for kind in ("nft", "legacy"):
        save, restore = shutil.which(f"{base}-{kind}-save"), shutil.which(f"{base}-{kind}-restore")
        if save and restore:
            found.append(Backend(kind, family, save, restore))
    plain_save, plain_restore = shutil.which(f"{base}-save"), shutil.which(f"{base}-restore")
    if not found and plain_save and plain_restore:
        plain_kind = _plain_kind(plain_save)
        if plain_kind:
            found.append(Backend(plain_kind, family, plain_save, plain_restore))
    return found


def read_save(backend: Backend, table: str | None = "nat") -> str:
    """iptables-save output for one table (or all tables when table is None)."""
    argv = [backend.save] + (["-t", table] if table else [])
    result = _run(argv)
    if result.returncode != 0:
        raise InterceptionError(f"{backend.label}: reading the rules failed", " ".join(argv), result.stderr or result.stdout)
    return result.stdout


def read_state(backend: Backend, table: str = "nat") -> TableState:
    """Our chains and hooks as they are now in one table of this back end."""
    return parse_table_state(read_save(backend, table), table)


def _rule_count(backend: Backend) -> int:
    try:
        text = read_save(backend, table=None)
    except InterceptionError:
        return -1
    return sum(1 for line in text.splitlines() if line.startswith("-A "))


def choose_backend(mode: str, family: int) -> Backend:
    """The back end to install with (see the module docstring for auto).

    Raises:
        InterceptionError: no iptables for that family, or the requested one is missing.
    """
    if mode not in MODES:
        raise InterceptionError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    backends = available_backends(family)
    if mode != "auto":
        backends = [b for b in backends if b.kind == mode]
    if not backends:
        wanted = "iptables" if mode == "auto" else f"iptables-{mode}"
        raise InterceptionError(f"no {wanted} found for IPv{family}: install it (Debian: apt-get install iptables)")
    if len(backends) == 1:
        return backends[0]
    for backend in backends:
        try:
            if read_state(backend).installed:
                return backend
        except InterceptionError:
            continue
    counts = [(_rule_count(b), b.kind == "nft") for b in backends]
    return backends[counts.index(max(counts))]


def apply(backend: Backend, text: str) -> None:
    """Feed restore input to `<backend>-restore --noflush` (one transaction).

    Raises:
        InterceptionError: with the command, the input line numbers as iptables counts them, and its stderr verbatim.
    """
    argv = [backend.restore, "--noflush", "--wait", "10"]
    result = _run(argv, stdin=text)
    if result.returncode != 0:
        numbered = "".join(f"\n    {n}: {line}" for n, line in enumerate(text.splitlines(), 1))
        raise InterceptionError(f"{backend.label}: applying the rules failed; input was:{numbered}", " ".join(argv), result.stderr or result.stdout)


def restore_command(backend: Backend) -> str:
    """The command line apply() runs, for dry runs and logs."""
    return f"{backend.restore} --noflush --wait 10"


Writer = Callable[[str], None]


def install(spec: InterceptionSpec, *, mode: str, families: Iterable[int], dry_run: bool, out: Writer) -> None:
    """Make each family's nat and mangle tables and policy routing hold exactly our rules (idempotent)."""
    for family in families:
        backend = choose_backend(mode, family)
        for table in TABLES:
            _install_table(spec, backend, table, dry_run, out)
        _install_routing(spec, family, dry_run, out)
        if not dry_run:
            inbound = (f"TPROXY (mangle, mark {spec.tproxy_mark:#x}, table {spec.tproxy_table})" if spec.tproxy
                       else "REDIRECT")
            out(f"{backend.label}: interception installed: inbound tcp -> :{spec.inbound_port} by {inbound}, "
                f"outbound tcp -> :{spec.outbound_port}, uid {spec.proxy_uid} bypasses\n")


def _install_table(spec: InterceptionSpec, backend: Backend, table: str, dry_run: bool, out: Writer) -> None:
    try:
        state, note = read_state(backend, table), ""
    except InterceptionError as exc:
        if not dry_run:
            raise
        state, note = TableState(table=table), f"# current {table} rules unreadable ({exc.detail}): assuming none\n"
    text = render_install(spec, backend.family, state)
    if not text:
        return
    if dry_run:
        out(f"# {backend.label}: {restore_command(backend)} <<EOF\n{note}{text}# EOF\n")
    else:
        apply(backend, text)


def _install_routing(spec: InterceptionSpec, family: int, dry_run: bool, out: Writer) -> None:
    """The ip rule and route TPROXY needs (or, under REDIRECT, the removal of ours)."""
    if not routing.available():
        if spec.tproxy:
            raise InterceptionError("--inbound-mode tproxy needs iproute2's `ip` for its policy routing"
                                    " (Debian: apt-get install iproute2)")
        return
    try:
        state = routing.read_routing(family)
    except InterceptionError:
        if not dry_run:
            raise
        state = routing.RoutingState(family)
    commands = routing.plan_install(spec, state)
    if dry_run:
        out("".join(" ".join(argv) + "\n" for argv in commands))
    else:
        routing.apply(commands)


def _backends_with_state(mode: str, families: Iterable[int], out: Writer) -> list[tuple[Backend, list[TableState]]]:
    """Every readable back end (of the mode) with what of ours each table holds.

    Remove and show look at every back end, not just the one auto would pick,
    so a rule written by the other back end is never left behind unseen.
    """
    if mode not in MODES:
        raise InterceptionError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    found: list[tuple[Backend, list[TableState]]] = []
    for family in families:
        backends = [b for b in available_backends(family) if mode in ("auto", b.kind)]
        if not backends and family == 4:
            raise InterceptionError(f"no iptables{'' if mode == 'auto' else '-' + mode} found: install it (Debian: apt-get install iptables)")
        for backend in backends:
            try:
                found.append((backend, [read_state(backend, table) for table in TABLES]))
            except InterceptionError as exc:
                if family == 4:
                    raise
                out(f"# {backend.label}: skipped, cannot read its tables: {exc.output.strip() or exc.detail}\n")
    return found


def _routing_states(families: Iterable[int], out: Writer) -> list[routing.RoutingState]:
    """Our ip rules and routes per family (none when iproute2 is absent: then we cannot have added any)."""
    if not routing.available():
        return []
    states = []
    for family in families:
        try:
            states.append(routing.read_routing(family))
        except InterceptionError as exc:
            if family == 4:
                raise
            out(f"# ip -6: skipped, cannot read the policy routing: {exc.output.strip() or exc.detail}\n")
    return states


def remove(*, mode: str, families: Iterable[int], dry_run: bool, out: Writer) -> None:
    """Delete our hooks, chains, ip rules and routes from every back end and family that has them."""
    families = tuple(families)
    removed = False
    for backend, states in _backends_with_state(mode, families, out):
        for state in states:
            text = render_remove(state)
            if not text:
                continue
            removed = True
            if dry_run:
                out(f"# {backend.label}: {restore_command(backend)} <<EOF\n{text}# EOF\n")
            else:
                apply(backend, text)
                out(f"{backend.label}: interception removed from {state.table} "
                    f"({len(state.chains)} chains, {len(state.references)} hooks)\n")
    for rstate in _routing_states(families, out):
        commands = routing.plan_remove(rstate)
        removed = removed or bool(commands)
        if dry_run:
            out("".join(" ".join(argv) + "\n" for argv in commands))
        elif commands:
            routing.apply(commands)
            out(f"ip -{rstate.family}: removed {len(rstate.rules)} rules and {len(rstate.routes)} routes\n")
    if not removed:
        out("no spiffe-sidecar interception rules found: nothing to remove\n")


def show(*, mode: str, families: Iterable[int], out: Writer) -> bool:
    """Print our rules per back end and table, and our policy routing; False when none are installed."""
    families = tuple(families)
    any_installed = False
    for backend, states in _backends_with_state(mode, families, out):
        for state in states:
            if state.installed:
                any_installed = True
                out(f"# {backend.label} ({state.table})\n{render_show(state)}")
    for rstate in _routing_states(families, out):
        if rstate.installed:
            any_installed = True
            out(f"# policy routing (ip -{rstate.family})\n{routing.render_show(rstate)}")
    if not any_installed:
        out("no spiffe-sidecar interception rules installed\n")
    return any_installed
