"""One iptables table as we see it and as we want it: parse iptables-save, render iptables-restore.

Generic over the table (nat for REDIRECT, mangle for TPROXY) and free of
any rule knowledge: rules.py says which chains, rules and hooks a table
should hold, this module turns "what is there" plus "what we want" into one
`iptables-restore --noflush` transaction. Pure text, so dry runs and unit
tests see exactly what would be applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
#: Our chains in each table we touch, in declaration order.
OWN_CHAINS_BY_TABLE: dict[str, tuple[str, ...]] = {
    "nat": ("SPIFFE_INBOUND", "SPIFFE_INBOUND_REDIRECT", "SPIFFE_OUTBOUND", "SPIFFE_OUTBOUND_REDIRECT"),
    "mangle": ("SPIFFE_INBOUND", "SPIFFE_INBOUND_TPROXY", "SPIFFE_DIVERT"),
}
TABLES = tuple(OWN_CHAINS_BY_TABLE)


@dataclass(frozen=True, slots=True)
class TableState:
    """What of ours is in one live table (parsed from iptables-save).

    Attributes:
        chains: our chains that exist.
        references: rules in built-in chains that jump to one of our chains, as printed.
        own_rules: the rules inside our chains, as printed.
        table: which table this is ("nat" or "mangle").
    """

    chains: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    own_rules: tuple[str, ...] = field(default=())
    table: str = "nat"

    @property
    def installed(self) -> bool:
        """True when any trace of ours is present."""
        return bool(self.chains or self.references)


@dataclass(frozen=True, slots=True)
class Wanted:
    """What one table should hold: our chains, their rules, and the hooks into them."""

    table: str
    chains: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()


def _section(save_text: str, table: str) -> list[str]:
    lines: list[str] = []
    inside = False
    for line in save_text.splitlines():
        if line.startswith("*"):
            inside = line.strip() == f"*{table}"
        elif inside and line.strip() == "COMMIT":
            inside = False
        elif inside:
            lines.append(line.rstrip())
    return lines


def parse_table_state(save_text: str, table: str = "nat") -> TableState:
    """Find our chains, the hooks into them and their rules in one table of iptables-save output."""
    own = OWN_CHAINS_BY_TABLE[table]
    chains: list[str] = []
    references: list[str] = []
    own_rules: list[str] = []
    for line in _section(save_text, table):
        if line.startswith(":"):
            name = line[1:].split()[0]
            if name in own:
                chains.append(name)
        elif line.startswith("-A "):
            words = line.split()
            target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
            if words[1] in own:
                own_rules.append(line)
            elif target in own:
                references.append(line)
    return TableState(tuple(chains), tuple(references), tuple(own_rules), table)


def render_wanted(wanted: Wanted, state: TableState) -> str:
    """iptables-restore --noflush input that makes a table hold exactly `wanted` ("" if nothing to do).

    Declaring a chain under --noflush creates or empties it, so a second
    install rewrites rather than appends. Hooks are added only when missing;
    stray or duplicate references to our chains are deleted; our chains that
    are no longer wanted (a switch between REDIRECT and TPROXY) are flushed,
    then deleted, after every reference to them is gone.
    """
    if not wanted.chains and not state.installed:
        return ""
    lines = [f"*{wanted.table}"]
    lines += [f":{chain} - [0:0]" for chain in wanted.chains]
    lines += wanted.rules
    present = list(state.references)
    for rule in list(present):
        if rule not in wanted.hooks or present.count(rule) > 1:
            lines.append("-D" + rule[2:])
            present.remove(rule)
    lines += [rule for rule in wanted.hooks if rule not in present]
    stale = [chain for chain in state.chains if chain not in wanted.chains]
    lines += [f"-F {chain}" for chain in stale] + [f"-X {chain}" for chain in stale]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_remove(state: TableState) -> str:
    """iptables-restore --noflush input that removes every trace of ours ("" if none).

    References go first (a referenced chain cannot be deleted), then every
    chain is flushed before any is deleted (our chains jump to each other).
    """
    return render_wanted(Wanted(state.table), state)


def render_show(state: TableState) -> str:
    """Our part of a table, iptables-save style (hooks first)."""
    lines = [f":{chain} - [0:0]" for chain in state.chains]
    lines += list(state.references) + list(state.own_rules)
    return "\n".join(lines) + ("\n" if lines else "")

