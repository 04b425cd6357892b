"""CPU time and resident memory of process groups, read from /proc.

CPU is counted in kernel ticks (utime + stime of every process in the group,
threads included) so that a figure like "µs of CPU per request" is a property
of the proxy, not of how busy the rest of a 2-core machine was at the time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Usage:
    """A sample: CPU seconds so far and resident bytes, summed over a group."""

    cpu_s: float
    rss_bytes: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2:].split()


def pids_in_session(sid: int) -> list[int]:
    """Every live process whose session id is `sid` (our groups are sessions)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and int(fields[3]) == sid:
                out.append(int(name))
    return out


def sample(pids: Iterable[int]) -> Usage:
    """Sum utime+stime (fields 14, 15) and RSS (field 24) over `pids`."""
    ticks = 0
    pages = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        ticks += int(fields[11]) + int(fields[12])
        pages += int(fields[21])
    return Usage(cpu_s=ticks / CLK_TCK, rss_bytes=pages * PAGE)


@dataclass(frozen=True, slots=True)
class Side:
    """One proxy of a pair, for accounting: either a session we started
    (`sid`) or PIDs a user pointed us at (`pids`, with --pair-pids)."""

    label: str
    sid: int | None = None
    pids: tuple[int, ...] = ()

    def members(self) -> list[int]:
        return pids_in_session(self.sid) if self.sid is not None else list(self.pids)

    def sample(self) -> Usage:
        return sample(self.members())
