"""Strict YAML reading with file:line:field errors, shared by every loader.

ruamel.yaml keeps the line of every key; `Section` walks a mapping the way a
dataclass loader needs: take each known field with its type, then `finish()`
rejects whatever is left (an unknown key is an error, never ignored: a typo
in a security policy must not silently widen it).

    doc = load_yaml_file("agent.yaml")
    root = Section.root(doc)
    name = root.take("trust_domain", str, required=True)
    for entry in root.take_list("entries", required=True):   # -> list[Section]
        ...
    root.finish()
"""

from __future__ import annotations

import difflib
import io
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from proxy.errors import ConfigError

T = TypeVar("T")
_MISSING: Any = object()


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def load_yaml_text(text: str, file: str = "<string>") -> Any:
    """Parse YAML text; syntax errors become ConfigError with the line."""
    try:
        return _yaml().load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(file, line, "", f"YAML syntax error: {exc.problem or exc.context}") from None
    except YAMLError as exc:
        raise ConfigError(file, None, "", f"YAML error: {exc}") from None


def load_yaml_file(path: str | Path) -> tuple[Any, str]:
    """Read and parse a YAML file; returns (document, file name for errors)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, None, "", f"cannot read: {exc.strerror or exc}") from None
    return load_yaml_text(text, file), file


def _type_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_type_name(k) for k in kind)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list", dict: "a mapping"}.get(kind, getattr(kind, "__name__", str(kind)))


class Section:
    """A YAML mapping being read field by field, with its place in the file."""

    def __init__(self, data: Any, file: str, path: str, line: int | None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, line, path, f"expected a mapping, got {type(data).__name__}")
        self.data = data
        self.file = file
        self.path = path
        self.line = line
        self._seen: set[str] = set()

    @classmethod
    def root(cls, doc: Any, file: str) -> "Section":
        """The top-level mapping of a document (an empty file is an empty mapping)."""
        if doc is None:
            doc = CommentedMap()
        return cls(doc, file, "", 1)

    # -- locations ---------------------------------------------------------

    def field(self, key: str) -> str:
        """Dotted path of a key of this section."""
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int | None:
        """1-based line of a key (of the section itself when unknown)."""
        if isinstance(self.data, CommentedMap) and key in self.data:
            try:
                return int(self.data.lc.key(key)[0]) + 1
            except (KeyError, TypeError, AttributeError):
                pass
        return self.line

    def error(self, key: str, detail: str) -> ConfigError:
        """A ConfigError pointing at `key` of this section."""
        return ConfigError(self.file, self.line_of(key), self.field(key), detail)

    # -- reading -------------------------------------------------------------

    def has(self, key: str) -> bool:
        return key in self.data

    def take(self, key: str, kind: Any, *, required: bool = False, default: Any = None,
             check: Callable[[Any], Any] | None = None) -> Any:
        """Read a scalar field of type `kind` (bool is never accepted as int).

        `check` may convert the value or raise ValueError/SidecarError, whose
        message becomes the error detail at this field's line.
        """
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.missing(key)
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            raise self.error(key, f"expected {_type_name(kind)}, got {value!r}")
        if isinstance(value, str):
            value = str(value)
        if check is not None:
            try:
                value = check(value)
            except (ValueError, Exception) as exc:  # noqa: BLE001 - detail goes to the user
                if isinstance(exc, ConfigError):
                    raise
                raise self.error(key, str(exc)) from None
        return value

    def take_section(self, key: str, *, required: bool = False) -> "Section | None":
        """Read a nested mapping."""
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.missing(key)
            return None
        return Section(self.data[key], self.file, self.field(key), self.line_of(key))

    def take_list(self, key: str, *, required: bool = False) -> list[Any]:
        """Read a list; mapping items come back as Sections, scalars as themselves."""
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.missing(key)
            return []
        value = self.data[key]
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {value!r}")
        out: list[Any] = []
        for i, item in enumerate(value):
            path = f"{self.field(key)}[{i}]"
            line = self.line_of(key)
            if isinstance(value, CommentedSeq):
                try:
                    line = int(value.lc.item(i)[0]) + 1
                except (KeyError, TypeError, AttributeError):
                    pass
            out.append(Section(item, self.file, path, line) if isinstance(item, dict) else item)
        return out

    def item_line(self, key: str, index: int) -> int | None:
        """Line of the index-th item of list `key`."""
        value = self.data.get(key)
        if isinstance(value, CommentedSeq):
            try:
                return int(value.lc.item(index)[0]) + 1
            except (KeyError, TypeError, AttributeError):
                pass
        return self.line_of(key)

    def keys(self) -> Iterator[str]:
        """Keys in file order (for mappings whose keys are names, e.g. policies)."""
        for k in self.data:
            self._seen.add(str(k))
            yield str(k)

    def missing(self, key: str, detail: str = "is required") -> ConfigError:
        """The error for a required ``key`` that is absent.

        A misspelling of it is the likelier cause than an omission, and the
        more useful error: an unknown key close to ``key`` is reported as
        unknown, at its own line, with "did you mean".
        """
        unread = [str(k) for k in self.data if str(k) not in self._seen]
        close = difflib.get_close_matches(key, unread, n=1, cutoff=0.75)
        if close:
            return self.error(close[0], f"unknown key (did you mean {key!r}?)")
        return ConfigError(self.file, self.line, self.field(key), detail)

    def finish(self) -> None:
        """Reject unknown keys (every key must have been taken), suggesting the closest known one."""
        for key in self.data:
            if str(key) not in self._seen:
                close = difflib.get_close_matches(str(key), sorted(self._seen), n=1, cutoff=0.75)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(str(key), f"unknown key{hint}")
