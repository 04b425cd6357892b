"""Registration entries: which selectors earn which SPIFFE ID.

An entry matches a workload when every one of its selectors is among the
selectors the attestor observed (AND, like SPIRE's "subset" match). A
workload matching several entries gets one SVID per entry, in file order;
the first is its default SVID (the Workload API says the first is the
default).

Selectors are strings "type:key:value" (SPIRE's form, e.g. "unix:uid:1000");
the value may itself contain colons (cgroup paths), so only the first two
colons split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.spiffe.id import SpiffeId, TrustDomain

#: Keys the unix attestor produces, with the rule their values must follow.
_UNIX_KEYS: dict[str, tuple[re.Pattern[str], str]] = {
    "uid": (re.compile(r"\d+"), "a decimal user id"),
    "gid": (re.compile(r"\d+"), "a decimal group id"),
    "supplementary_gid": (re.compile(r"\d+"), "a decimal group id"),
    "user": (re.compile(r"[^\s:]+"), "a user name"),
    "group": (re.compile(r"[^\s:]+"), "a group name"),
    "supplementary_group": (re.compile(r"[^\s:]+"), "a group name"),
    "path": (re.compile(r"/\S*"), "an absolute path"),
    "sha256": (re.compile(r"[0-9a-f]{64}"), "64 lowercase hex digits"),
    "cgroup": (re.compile(r"\S+"), "a cgroup path"),
    "container_id": (re.compile(r"[0-9a-f]{12,64}"), "a hex container id"),
}


@dataclass(frozen=True, slots=True, order=True)
class Selector:
    """One attested fact, e.g. Selector("unix", "uid", "1000")."""

    type: str
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "Selector":
        """Parse "type:key:value", checking the key and value the attestor can produce.

        Raises:
            ValueError: naming the input and the rule it breaks.
        """
        parts = text.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"invalid selector {text!r}: expected type:key:value, e.g. unix:uid:1000")
        kind, key, value = parts
        if kind != "unix":
            raise ValueError(f"invalid selector {text!r}: unknown type {kind!r} (this agent attests: unix)")
        rule = _UNIX_KEYS.get(key)
        if rule is None:
            raise ValueError(f"invalid selector {text!r}: unknown unix key {key!r} "
                             f"(known: {', '.join(sorted(_UNIX_KEYS))})")
        if value != value.strip() or not rule[0].fullmatch(value):
            raise ValueError(f"invalid selector {text!r}: value must be {rule[1]}")
        return cls(kind, key, value)

    def __str__(self) -> str:
        return f"{self.type}:{self.key}:{self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A registration entry (see the agent.yaml `entries` list).

    Attributes:
        spiffe_id: the identity granted.
        selectors: all must be observed for the entry to match.
        x509_svid_ttl / jwt_svid_ttl: seconds; None means the agent default.
        dns_names: extra DNS SANs for the X.509-SVID.
        federates_with: trust domains whose bundles the workload also gets.
        hint: opaque label passed to the workload (Workload API `hint`).
        index: position in the file, for logs ("entry #2").
    """

    spiffe_id: SpiffeId
    selectors: frozenset[Selector]
    x509_svid_ttl: float | None = None
    jwt_svid_ttl: float | None = None
    dns_names: tuple[str, ...] = ()
    federates_with: tuple[TrustDomain, ...] = ()
    hint: str = ""
    index: int = 0

    def matches(self, observed: frozenset[Selector]) -> bool:
        """True when every selector of the entry was observed."""
        return self.selectors <= observed

    def describe(self) -> str:
        """Short form for logs."""
        sel = ",".join(sorted(str(s) for s in self.selectors))
        return f"entry #{self.index} {self.spiffe_id} [{sel}]"


class Registry:
    """The set of entries, immutable once loaded."""

    def __init__(self, entries: tuple[Entry, ...]) -> None:
        self.entries = entries

    def match(self, observed: frozenset[Selector]) -> list[Entry]:
        """Entries granted to a workload with these selectors, in file order.

        Two entries for the same SPIFFE ID would give a workload two SVIDs
        with the same ID; only the first is kept.
        """
        out: list[Entry] = []
        seen: set[SpiffeId] = set()
        for entry in self.entries:
            if entry.matches(observed) and entry.spiffe_id not in seen:
                seen.add(entry.spiffe_id)
                out.append(entry)
        return out


def format_selectors(selectors: frozenset[Selector] | list[Selector]) -> str:
    """Selectors in a stable, readable order (uid first, as operators look for it)."""
    order = {k: i for i, k in enumerate(("uid", "gid", "user", "group", "supplementary_gid",
                                         "supplementary_group", "path", "sha256", "cgroup", "container_id"))}
    items = sorted(selectors, key=lambda s: (s.type, order.get(s.key, 99), s.value))
    return ", ".join(str(s) for s in items)
