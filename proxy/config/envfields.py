"""Environment overrides of sidecar.yaml: one ``SPIFFE_SIDECAR_*`` variable per scalar field.

Every scalar field outside a list maps to one variable: ``SPIFFE_SIDECAR_`` +
the field path upper-cased with ``.`` as ``_`` (``limits.idle_timeout`` ->
``SPIFFE_SIDECAR_LIMITS_IDLE_TIMEOUT``). A variable wins over the file; a bad
value is reported as ``$NAME: field: detail``. ``Fields`` is the one place
that consults them, so the loader's readers never look at the environment
themselves.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ruamel.yaml.comments import CommentedMap

from proxy.yamlfields import Section

ENV_PREFIX = "SPIFFE_SIDECAR_"
ENDPOINT_SOCKET_ENV = "SPIFFE_ENDPOINT_SOCKET"


def env_var_name(field: str) -> str | None:
    """The environment variable of a field path (None for fields inside lists)."""
    if "[" in field:
        return None
    return ENV_PREFIX + field.replace(".", "_").upper()


def _env_value(text: str, kind: Any) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if bool in kinds and text.lower() in ("true", "false", "1", "0", "yes", "no"):
        return text.lower() in ("true", "1", "yes")
    if int in kinds and re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.lower() in ("", "null", "none"):
        return None
    return text


class Fields:
    """A Section read with environment overrides (see the module docstring)."""

    def __init__(self, section: Section, env: Mapping[str, str]) -> None:
        self.section = section
        self.env = env

    def sub(self, key: str) -> Fields:
        """A nested section; an absent one reads as empty so variables still apply."""
        sec = self.section.take_section(key)
        if sec is None:
            sec = Section(CommentedMap(), self.section.file, self.section.field(key), None)
        return Fields(sec, self.env)

    def overridden(self, key: str) -> bool:
        """True when a variable sets ``key``."""
        name = env_var_name(self.section.field(key))
        return name is not None and name in self.env

    def take(self, key: str, kind: Any, **kw: Any) -> Any:
        """Read ``key`` from the variable if set, else from the file."""
        name = env_var_name(self.section.field(key))
        if name is None or name not in self.env:
            return self.section.take(key, kind, **kw)
        mark_read(self.section, key)  # the variable replaces the file's value
        value = _env_value(self.env[name], kind)
        return Section({key: value}, f"${name}", self.section.path, None).take(key, kind, **kw)


def mark_read(section: Section, key: str) -> None:
    """Count ``key`` as taken without reading it (its value comes from elsewhere)."""
    # Section has no public "skip" and take() would type-check a value we discard.
    section._seen.add(key)
