"""Value checks the sidecar.yaml readers pass to ``Section.take(check=...)``.

Each takes the raw YAML (or environment) value and returns the converted
one, or raises ValueError whose message becomes the ``file:line:field``
error's detail, so it names the input and the rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from proxy.config.durations import parse_duration
from proxy.config.model import HostPort, parse_host_port


def enum_choice(kind: Any) -> Callable[[str], Any]:
    """A check accepting one of ``kind``'s values (an Enum class), returning the member."""
    def check(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"expected one of {', '.join(m.value for m in kind)}, got {value!r}") from None
    return check


def positive_duration(value: Any) -> float:
    """A duration that must be more than zero (a zero timeout would refuse everything)."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than 0, got {value!r}")
    return seconds


def optional_duration(value: Any) -> float | None:
    """A duration where 0 means "no limit" (None)."""
    seconds = parse_duration(value)
    return seconds if seconds > 0 else None


def int_range(low: int, high: int) -> Callable[[int], int]:
    """A check for an integer from ``low`` to ``high`` inclusive."""
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value
    return check


def address(*, ip_only: bool = False) -> Callable[[str], HostPort]:
    """A check parsing ``host:port`` (``ip_only``: an address to bind)."""
    return lambda text: parse_host_port(text, ip_only=ip_only)


def path_like(text: str) -> str:
    """A non-empty path-ish string (file path, or stdout/stderr/off for log.access)."""
    if not text:
        raise ValueError("expected a file path (or stdout, stderr, off for log.access), got an empty string")
    return text


def relative_to(base_dir: Path) -> Callable[[str], Path]:
    """A check resolving a path relative to the config file's directory, not the working directory."""
    def check(text: str) -> Path:
        p = Path(path_like(text)).expanduser()
        return p if p.is_absolute() else base_dir / p
    return check
