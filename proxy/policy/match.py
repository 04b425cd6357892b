"""Peer-ID patterns: what a policy rule or an outbound ``expect`` may name.

One matcher serves both the inbound policy and the outbound ``expect`` so the
two can never disagree on what a pattern means. A pattern is one of:

- an exact SPIFFE ID: ``spiffe://example.org/ns/prod/sa/frontend``;
- a segment glob: ``*`` stands for exactly one path segment (it never
  crosses a ``/``), ``**`` for the rest of the path, i.e. one or more
  segments, and is allowed only as the last segment:
  ``spiffe://example.org/ns/*/sa/frontend``, ``spiffe://example.org/ns/staging/**``;
  ``spiffe://example.org/**`` therefore covers every workload (non-root) ID of
  one trust domain; there is no wildcard trust domain: every trust domain a
  rule covers is written out;
- a trust-domain match, written as a mapping item ``{trust_domain: example.org}``:
  any workload ID issued in that trust domain (the same set as
  ``spiffe://example.org/**``, spelt for readers who think in trust domains).

Rejected when loaded, with the rule broken (a pattern that can never match is
an error, never a silent no-op):

- partial-segment globs (``sa/front*``, ``*end``): their meaning differs
  between products (istio#50504 mixes prefix and suffix forms), so a segment
  is either literal, ``*`` or ``**``;
- ``**`` anywhere but last, wildcards in the trust domain;
- anything the SPIFFE-ID standard forbids once the wildcards are set aside
  (uppercase trust domain, empty or dot segments, percent-encoding, a
  trailing ``/``...), checked by ``proxy.spiffe.id``'s own rules;
- a root-path ID (``spiffe://example.org``): no workload SVID carries one, so
  it can never match; ``{trust_domain: ...}`` says what was probably meant.

Matching is cheap enough for every connection: exact IDs are one set lookup,
trust domains another, and globs compare pre-split segment tuples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from proxy.errors import InvalidSpiffeIdError
from proxy.spiffe.id import BAD_SCHEME, MAX_ID_BYTES, SCHEME_PREFIX, SpiffeId, path_rule, trust_domain_rule

ONE = "*"
REST = "**"

# Accepts exactly what SpiffeId.parse accepts (plus the dot-segment and length
# checks next to its use), at a fraction of the cost: a per-connection peer
# string takes this path; anything it refuses goes to the strict parser for
# the error message. A property test holds the two to the same answers.
_VALID_ID = re.compile(r"spiffe://([a-z0-9._-]{1,255})((?:/[A-Za-z0-9._-]+)*)")


class PatternError(ValueError):
    """A pattern is invalid; the message names the pattern and the rule."""


class PeerView(NamedTuple):
    """A peer ID taken apart once per decision, shared by every rule.

    A NamedTuple because one is built per connection (cheap to construct).
    """

    text: str
    trust_domain: str
    segments: tuple[str, ...]

    @classmethod
    def of(cls, peer: SpiffeId | str) -> PeerView:
        """Split a peer ID; a string is parsed strictly first.

        Raises:
            InvalidSpiffeIdError: ``peer`` is a string and not a SPIFFE ID.
        """
        if isinstance(peer, str):
            m = _VALID_ID.fullmatch(peer)
            if m is not None and len(peer) <= MAX_ID_BYTES:
                path = m.group(2)
                if "/./" not in path + "/" and "/../" not in path + "/":
                    return cls(peer, m.group(1), tuple(path[1:].split("/")) if path else ())
            sid = SpiffeId.parse(peer)  # invalid: raises with the rule (valid: cannot happen)
        else:
            sid = peer
        path = sid.path
        return cls(SCHEME_PREFIX + sid.trust_domain.name + path, sid.trust_domain.name,
                   tuple(path[1:].split("/")) if path else ())

    @classmethod
    def trusted(cls, text: str) -> PeerView:
        """Split an ID string that a verifier already validated (no re-check).

        Only for IDs taken from a verified peer certificate: an invalid string
        here could match a pattern it should not.
        """
        rest = text[len(SCHEME_PREFIX):]
        slash = rest.find("/")
        if slash < 0:
            return cls(text, rest, ())
        return cls(text, rest[:slash], tuple(rest[slash + 1:].split("/")))


@dataclass(frozen=True, slots=True)
class SegmentGlob:
    """A compiled glob: trust domain, fixed segments (``*`` allowed), trailing ``**``."""

    text: str
    trust_domain: str
    segments: tuple[str, ...]
    rest: bool

    def matches(self, peer: PeerView) -> bool:
        """True when ``peer`` has this trust domain and fits the segments."""
        if peer.trust_domain != self.trust_domain:
            return False
        n = len(self.segments)
        if self.rest:
            if len(peer.segments) <= n:
                return False
        elif len(peer.segments) != n:
            return False
        for want, got in zip(self.segments, peer.segments):
            if want != ONE and want != got:
                return False
        return True


@dataclass(frozen=True, slots=True)
class PeerMatcher:
    """A compiled set of patterns; a peer matches when any pattern does.

    Attributes:
        patterns: the patterns as written (for explanations and /config).
    """

    patterns: tuple[str, ...]
    exact: frozenset[str]
    trust_domains: frozenset[str]
    globs: tuple[SegmentGlob, ...]

    def match(self, peer: PeerView) -> str | None:
        """The first pattern (as written) that matches ``peer``, or None."""
        if peer.text in self.exact:
            return peer.text
        if peer.trust_domain in self.trust_domains and peer.segments:
            return f"{{trust_domain: {peer.trust_domain}}}"
        for glob in self.globs:
            if glob.matches(peer):
                return glob.text
        return None

    def matches(self, peer: SpiffeId | str | PeerView) -> bool:
        """True when ``peer`` matches one of the patterns (used for outbound ``expect``).

        Raises:
            InvalidSpiffeIdError: ``peer`` is a string and not a SPIFFE ID.
        """
        view = peer if isinstance(peer, PeerView) else PeerView.of(peer)
        return self.match(view) is not None

    def describe(self) -> str:
        """The patterns as one readable string."""
        return ", ".join(self.patterns)


def compile_trust_domain(name: str) -> str:
    """Validate a ``{trust_domain: NAME}`` item; returns the canonical pattern text.

    Raises:
        PatternError: the name is not a valid trust domain.
    """
    if "*" in name:
        raise PatternError(f"Invalid trust domain {name!r}: wildcards are not allowed in a trust domain")
    if name.startswith(SCHEME_PREFIX):
        name = name[len(SCHEME_PREFIX):]
    rule = trust_domain_rule(name)
    if rule is not None:
        raise PatternError(f"Invalid trust domain {name!r}: {rule}")
    return name


def compile_id_pattern(text: str) -> SegmentGlob | str:
    """Validate a SPIFFE ID pattern: an exact ID (returned as str) or a SegmentGlob.

    Raises:
        PatternError: naming the pattern and the first rule it breaks.
    """
    if not text.startswith(SCHEME_PREFIX):
        raise PatternError(str(InvalidSpiffeIdError(text, BAD_SCHEME)))
    rest = text[len(SCHEME_PREFIX):]
    slash = rest.find("/")
    td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "*" in td:
        raise PatternError(f"Invalid SPIFFE ID pattern {text!r}: wildcards are not allowed in the trust domain;"
                           " list each trust domain")
    if "*" not in path:
        try:
            SpiffeId.parse(text)
        except ValueError as exc:
            raise PatternError(str(exc)) from None
        if not path:
            raise PatternError(f"Invalid SPIFFE ID pattern {text!r}: a root-path ID never matches a workload;"
                               f" write {{trust_domain: {td}}} to match every ID of the trust domain")
        return text
    return _compile_glob(text, td, path)


def _compile_glob(text: str, td: str, path: str) -> SegmentGlob:
    segs = path[1:].split("/")
    for i, seg in enumerate(segs):
        if "*" in seg and seg not in (ONE, REST):
            raise PatternError(f"Invalid SPIFFE ID pattern {text!r}: segment {seg!r} mixes '*' with other"
                               " characters; a segment is literal, '*' (one segment) or '**' (the rest)")
        if seg == REST and i != len(segs) - 1:
            raise PatternError(f"Invalid SPIFFE ID pattern {text!r}: '**' is allowed only as the last segment")
    # Check everything else with the SPIFFE-ID rules, a wildcard standing for a valid segment.
    literal = "/" + "/".join("x" if s in (ONE, REST) else s for s in segs)
    rule = trust_domain_rule(td) or path_rule(literal)
    if rule is not None:
        raise PatternError(f"Invalid SPIFFE ID pattern {text!r}: {rule}")
    rest = segs[-1] == REST
    return SegmentGlob(text, td, tuple(segs[:-1] if rest else segs), rest)


@dataclass(frozen=True, slots=True)
class TrustDomainPattern:
    """The ``{trust_domain: NAME}`` item of a pattern list."""

    name: str


def compile_matcher(items: Iterable[str | TrustDomainPattern]) -> PeerMatcher:
    """Compile a pattern list (ID patterns and trust-domain items, in file order).

    Raises:
        PatternError: on the first invalid pattern.
    """
    patterns: list[str] = []
    exact: set[str] = set()
    tds: set[str] = set()
    globs: list[SegmentGlob] = []
    for item in items:
        if isinstance(item, TrustDomainPattern):
            name = compile_trust_domain(item.name)
            tds.add(name)
            patterns.append(f"{{trust_domain: {name}}}")
            continue
        compiled = compile_id_pattern(item)
        patterns.append(item)
        if isinstance(compiled, SegmentGlob):
            globs.append(compiled)
        else:
            exact.add(compiled)
    return PeerMatcher(tuple(patterns), frozenset(exact), frozenset(tds), tuple(globs))
