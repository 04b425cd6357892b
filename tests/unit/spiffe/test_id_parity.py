"""Property tests: the SPIFFE ID parser against its compiled twin and against itself.

Strings are drawn near the boundary of validity (the right prefix, the
allowed alphabets plus the characters each rule is about), where two
hand-written parsers are most likely to disagree.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.combos import fastpath, requires_fastpath

from proxy.errors import InvalidSpiffeIdError
from proxy.spiffe.id import SpiffeId

TD_ALPHABET = "abcxyz019.-_"
PATH_ALPHABET = TD_ALPHABET + "ABZ"
NOISE = ":/@%?#\n \x00Aé.~"

td_names = st.text(alphabet=TD_ALPHABET, min_size=1, max_size=12)
segments = st.text(alphabet=PATH_ALPHABET, min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
valid_ids = st.builds(lambda td, segs: "spiffe://" + td + "".join("/" + s for s in segs),
                      td_names, st.lists(segments, max_size=5))
near_ids = st.builds(lambda prefix, body: prefix + body,
                     st.sampled_from(["spiffe://", "spiffe://", "spiffe:/", "SPIFFE://", "spiffe:", ""]),
                     st.text(alphabet=TD_ALPHABET + PATH_ALPHABET + NOISE + "/" * 4, max_size=30))
mutated = st.builds(lambda s, i, c: s[:i % (len(s) + 1)] + c + s[i % (len(s) + 1):],
                    valid_ids, st.integers(min_value=0), st.sampled_from(list(NOISE + "/")))
any_text = st.text(max_size=40)
candidates = st.one_of(valid_ids, near_ids, mutated, any_text)


def _python(value: str) -> tuple[str, str] | str:
    try:
        sid = SpiffeId.parse(value)
    except InvalidSpiffeIdError as exc:
        return "rejected: " + exc.rule
    return sid.trust_domain.name, sid.path


def _fastpath(value: str) -> tuple[str, str] | str:
    try:
        return tuple(fastpath().parse_spiffe_id(value))  # type: ignore[return-value]
    except InvalidSpiffeIdError as exc:
        return "rejected: " + exc.rule


@requires_fastpath
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candidates)
def test_compiled_parser_agrees_with_python_parser(value: str) -> None:
    python, compiled = _python(value), _fastpath(value)
    # Accept/reject and the parsed parts must agree; so must the rule named.
    assert compiled == python


@settings(max_examples=100, deadline=None)
@given(valid_ids)
def test_every_well_formed_id_is_accepted_and_round_trips(value: str) -> None:
    assert str(SpiffeId.parse(value)) == value


@settings(max_examples=100, deadline=None)
@given(candidates)
def test_accepted_ids_round_trip_and_reparse(value: str) -> None:
    try:
        sid = SpiffeId.parse(value)
    except InvalidSpiffeIdError as exc:
        assert exc.value == value and exc.rule
        return
    assert str(sid) == value
    assert SpiffeId.parse(str(sid)) == sid
