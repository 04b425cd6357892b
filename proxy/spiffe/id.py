"""SPIFFE IDs and trust domains, parsed exactly as the SPIFFE-ID standard says.

The parser is strict like go-spiffe (not lenient like py-spiffe): the
scheme must be exactly ``spiffe`` and the trust domain already lowercase.
A peer certificate that is "almost" a SPIFFE ID is an attack surface, and
configuration that is not canonical is a typo waiting to mismatch; both
are cheaper to reject than to normalise.

The algorithm is written out step by step (no regex: ``$`` matches before a
trailing newline) because the compiled engine (``proxy._fastpath``) has a
twin, ``parse_spiffe_id``, that must accept and reject exactly the same
strings and report the same rule. The order of checks is part of that
contract:

1. empty string -> ``EMPTY``;
2. more than 2048 bytes (UTF-8) -> ``TOO_LONG``;
3. does not start with exactly ``spiffe://`` -> ``BAD_SCHEME``;
4. the authority is everything up to the first ``/``; each of its
   characters, left to right, must be in ``[a-z0-9._-]`` (else the rule for
   that character: ``A-Z`` -> ``TD_CHARS`` (uppercase), ``:`` ->
   ``TD_PORT``, ``@`` -> ``TD_USERINFO``, ``%`` -> ``TD_PERCENT``, ``?`` ->
   ``QUERY``, ``#`` -> ``FRAGMENT``, anything else -> ``TD_CHARS``);
5. empty authority -> ``TD_EMPTY``; over 255 bytes -> ``TD_TOO_LONG``;
6. the path (``""`` or ``/`` + segments split on ``/``), segment by
   segment, left to right: an empty segment is ``PATH_TRAILING_SLASH`` when
   it is the last one, else ``PATH_EMPTY_SEGMENT``; then each character of
   the segment must be in ``[A-Za-z0-9._-]`` (``?`` -> ``QUERY``, ``#`` ->
   ``FRAGMENT``, ``%`` -> ``PATH_PERCENT``, else ``PATH_CHARS``); then a
   segment equal to ``.`` or ``..`` -> ``PATH_DOT_SEGMENT``.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import InvalidSpiffeIdError, InvalidTrustDomainError

SCHEME_PREFIX = "spiffe://"
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255

# Rule texts. They are part of the twin contract with proxy._fastpath, and
# they are what an operator reads, so they say what is allowed.
EMPTY = "SPIFFE ID cannot be empty"
TOO_LONG = "SPIFFE ID must be at most 2048 bytes"
BAD_SCHEME = "scheme is missing or invalid: it must be exactly 'spiffe://' (lowercase)"
TD_EMPTY = "trust domain is missing"
TD_TOO_LONG = "trust domain must be at most 255 bytes"
TD_CHARS = "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
TD_PORT = "trust domain cannot contain a port"
TD_USERINFO = "trust domain cannot contain userinfo"
TD_PERCENT = "trust domain cannot be percent-encoded"
QUERY = "SPIFFE ID cannot contain a query"
FRAGMENT = "SPIFFE ID cannot contain a fragment"
PATH_EMPTY_SEGMENT = "path cannot contain empty segments"
PATH_TRAILING_SLASH = "path cannot have a trailing slash"
PATH_DOT_SEGMENT = "path cannot contain dot segments"
PATH_PERCENT = "path cannot be percent-encoded"
PATH_CHARS = "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
PATH_NO_LEADING_SLASH = "path must be empty or start with '/'"
TD_HAS_PATH = "a trust domain has no path"

_TD_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_PATH_ALLOWED = _TD_ALLOWED | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TD_SPECIAL = {":": TD_PORT, "@": TD_USERINFO, "%": TD_PERCENT, "?": QUERY, "#": FRAGMENT}
_PATH_SPECIAL = {"%": PATH_PERCENT, "?": QUERY, "#": FRAGMENT}


def _utf8_len(s: str) -> int:
    # surrogatepass: a lone surrogate must still get a length, then be
    # rejected by the character rules, not crash the parser.
    return len(s.encode("utf-8", "surrogatepass"))


def trust_domain_rule(name: str) -> str | None:
    """Return the first rule ``name`` breaks as a trust domain name, or None."""
    if not _TD_ALLOWED.issuperset(name):
        # Slow path only on failure: find the first offending character.
        ch = next(c for c in name if c not in _TD_ALLOWED)
        return _TD_SPECIAL.get(ch, TD_CHARS)
    if not name:
        return TD_EMPTY
    if _utf8_len(name) > MAX_TRUST_DOMAIN_BYTES:
        return TD_TOO_LONG
    return None


def path_rule(path: str) -> str | None:
    """Return the first rule ``path`` breaks as a SPIFFE ID path, or None.

    ``""`` is the root path (valid here; leaf SVIDs reject it separately).
    """
    if not path:
        return None
    if path[0] != "/":
        return PATH_NO_LEADING_SLASH
    segments = path[1:].split("/")
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if not seg:
            return PATH_TRAILING_SLASH if i == last else PATH_EMPTY_SEGMENT
        if not _PATH_ALLOWED.issuperset(seg):
            ch = next(c for c in seg if c not in _PATH_ALLOWED)
            return _PATH_SPECIAL.get(ch, PATH_CHARS)
        if seg in (".", ".."):
            return PATH_DOT_SEGMENT
    return None


def _split(value: str) -> tuple[str, str]:
    """Split a SPIFFE ID string into (trust domain, path), or raise with the rule."""
    if not value:
        raise InvalidSpiffeIdError(value, EMPTY)
    if _utf8_len(value) > MAX_ID_BYTES:
        raise InvalidSpiffeIdError(value, TOO_LONG)
    if not value.startswith(SCHEME_PREFIX):
        raise InvalidSpiffeIdError(value, BAD_SCHEME)
    rest = value[len(SCHEME_PREFIX):]
    slash = rest.find("/")
    name, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    rule = trust_domain_rule(name) or path_rule(path)
    if rule is not None:
        raise InvalidSpiffeIdError(value, rule)
    return name, path


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class TrustDomain:
    """A SPIFFE trust domain: the authority of SPIFFE IDs and the key of bundles.

    Attributes:
        name: the bare name, e.g. ``"example.org"`` (always valid: checked on
            construction).
    """

    name: str

    def __post_init__(self) -> None:
        rule = trust_domain_rule(self.name)
        if rule is not None:
            raise InvalidTrustDomainError(self.name, rule)

    @classmethod
    def parse(cls, value: str) -> TrustDomain:
        """Parse ``"example.org"`` or ``"spiffe://example.org"``.

        A SPIFFE ID with a path is refused: a configuration that names a
        workload where a trust domain is expected is a mistake to report,
        not to guess about.

        Raises:
            InvalidTrustDomainError: naming the input and the rule broken.
        """
        if "://" in value or value.startswith(SCHEME_PREFIX[:7]):
            try:
                name, path = _split(value)
            except InvalidSpiffeIdError as exc:
                raise InvalidTrustDomainError(value, exc.rule) from None
            if path:
                raise InvalidTrustDomainError(value, TD_HAS_PATH)
            return cls._checked(name)
        rule = trust_domain_rule(value)
        if rule is not None:
            raise InvalidTrustDomainError(value, rule)
        return cls(name=value)

    @classmethod
    def _checked(cls, name: str) -> TrustDomain:
        td = object.__new__(cls)
        object.__setattr__(td, "name", name)
        return td

    def id_string(self) -> str:
        """The trust domain's own SPIFFE ID, ``spiffe://<name>``."""
        return SCHEME_PREFIX + self.name

    def spiffe_id(self) -> SpiffeId:
        """The trust domain's own (root-path) SPIFFE ID."""
        return SpiffeId(trust_domain=self, path="")

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class SpiffeId:
    """A SPIFFE ID: a trust domain and a (possibly empty) path.

    Attributes:
        trust_domain: where the ID is issued.
        path: ``""`` (root) or ``/seg/seg...``; case-sensitive.
    """

    trust_domain: TrustDomain
    path: str

    def __post_init__(self) -> None:
        rule = path_rule(self.path)
        if rule is None and _utf8_len(self.path) + len(SCHEME_PREFIX) + len(self.trust_domain.name) > MAX_ID_BYTES:
            rule = TOO_LONG
        if rule is not None:
            raise InvalidSpiffeIdError(SCHEME_PREFIX + self.trust_domain.name + self.path, rule)

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        """Parse a SPIFFE ID string strictly (see the module docstring for the rules).

        Raises:
            InvalidSpiffeIdError: naming the input and the first rule broken.
        """
        name, path = _split(value)
        return cls._checked(TrustDomain._checked(name), path)

    @classmethod
    def _checked(cls, trust_domain: TrustDomain, path: str) -> SpiffeId:
        # _split already applied every rule: skip __post_init__'s second pass
        # (parsing is on the per-connection path of the reference engine).
        sid = object.__new__(cls)
        object.__setattr__(sid, "trust_domain", trust_domain)
        object.__setattr__(sid, "path", path)
        return sid

    @classmethod
    def from_parts(cls, trust_domain: TrustDomain | str, path: str) -> SpiffeId:
        """Build an ID from a trust domain and a path (``""`` or ``/a/b``).

        Raises:
            InvalidSpiffeIdError: the path (or the trust domain) is invalid.
        """
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        return cls(trust_domain=td, path=path)

    @property
    def is_root(self) -> bool:
        """True for a path-less ID (a trust domain's own ID; never a workload's)."""
        return not self.path

    def is_member_of(self, trust_domain: TrustDomain) -> bool:
        """True when this ID was issued in ``trust_domain``."""
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return SCHEME_PREFIX + self.trust_domain.name + self.path
