"""Warnings about valid but suspicious policies, shown by ``policy check``.

Loading rejects what is wrong; this finds what is probably a mistake and
is not an error: an allow pattern that an enforced deny rule of the same
policy always overrides (deny runs first, so that allow can never grant
anything). Covered: exact IDs, segment globs and trust-domain items, by
exact set reasoning on segments (no sampling).
"""

from __future__ import annotations

from proxy.policy.match import ONE, PeerMatcher, PeerView, SegmentGlob
from proxy.policy.model import Policy, RuleAction, RuleMode


def _glob_covers(outer: SegmentGlob, inner: SegmentGlob) -> bool:
    """True when every ID ``inner`` matches is matched by ``outer``."""
    if outer.trust_domain != inner.trust_domain:
        return False
    n_out, n_in = len(outer.segments), len(inner.segments)
    if outer.rest:
        # inner's IDs have n_in segments (n_in + 1 or more when inner.rest); outer needs more than n_out.
        if not (n_in > n_out or (inner.rest and n_in >= n_out)):
            return False
    elif inner.rest or n_in != n_out:
        return False
    return all(o == ONE or (o == i and i != ONE) for o, i in zip(outer.segments, inner.segments))


def _as_glob(pattern: str) -> SegmentGlob:
    rest = pattern[len("spiffe://"):]
    td, _, path = rest.partition("/")
    segs = path.split("/")
    tail = segs[-1] == "**"
    return SegmentGlob(pattern, td, tuple(segs[:-1] if tail else segs), tail)


def _covers(deny: PeerMatcher, pattern: str) -> bool:
    """True when ``deny`` matches every ID that ``pattern`` (as written in a rule) matches."""
    if pattern.startswith("{trust_domain: "):
        td = pattern[len("{trust_domain: "):-1]
        return td in deny.trust_domains or any(
            g.trust_domain == td and g.rest and not g.segments for g in deny.globs)
    inner = _as_glob(pattern)
    if inner.trust_domain in deny.trust_domains:
        return True
    if "*" not in pattern:
        view = PeerView(pattern, inner.trust_domain, inner.segments)
        return pattern in deny.exact or any(g.matches(view) for g in deny.globs)
    return any(_glob_covers(g, inner) for g in deny.globs)


def shadowed_allows(policy: Policy) -> list[str]:
    """One sentence per allow pattern that an enforced deny rule always overrides."""
    denies = [r for r in policy.deny_rules if r.mode is RuleMode.ENFORCE]
    out: list[str] = []
    for rule in policy.rules:
        if rule.action is not RuleAction.ALLOW:
            continue
        for pattern in rule.peers.patterns:
            for deny in denies:
                if _covers(deny.peers, pattern):
                    out.append(f"{rule.where}: policy {policy.name!r}: allow rule {rule.name!r} pattern {pattern}"
                               f" can never grant: deny rule {deny.name!r} ({deny.where}) always matches first")
                    break
    return out
