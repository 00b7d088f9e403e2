"""The filter language: validation errors that name the part, the reference evaluator's semantics, the
access filter, and parse/to_dict round trips (hypothesis)."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cjkrag.connectors.filters import (
    FIELDS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    Condition,
    Logical,
    acl_filter,
    and_,
    evaluate,
    lookup,
    parse_filter,
    to_dict,
    validate_principal,
)
from cjkrag.errors import FilterError


def cond(field: Any, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "operator": op, "value": value}


def nest(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = cond("title", "==", "x")
    for _ in range(depth):
        node = {"operator": "AND", "conditions": [node]}
    return node


# ------------------------------------------------------------------------------------------ validation
BAD: list[tuple[Any, str, str]] = [
    # (spec, the part the message must name, a word of the problem/fix)
    ({"operator": "AND", "conditions": [cond("title", "==", "a"), cond("title", "=~", "a")]},
     "conditions[1].operator", "unknown operator"),
    ({"operator": "and", "conditions": [cond("title", "==", "a")]}, "operator", "'AND'"),
    ({"operator": "XOR", "conditions": [cond("title", "==", "a")]}, "operator", "AND, OR or NOT"),
    (cond("author", "==", "a"), "field", "unknown field"),
    (cond("metadata.a-b", "==", "a"), "field", "[A-Za-z_]"),
    (cond("metadata.a.b.c.d.e", "==", "a"), "field", "at most 4"),
    (cond("metadata.", "==", "a"), "field", "not a name"),
    (cond(3, "==", "a"), "field", "field name"),
    (cond("start", "==", "3"), "value", "int"),
    (cond("start", "==", 3.0), "value", "int"),
    (cond("start", "==", True), "value", "int"),
    (cond("public", "==", "true"), "value", "bool"),
    (cond("public", "==", 1), "value", "bool"),
    (cond("public", ">", True), "operator", "does not apply"),
    (cond("acl", "==", "u"), "operator", "contains_any"),
    (cond("acl", "contains_any", "u"), "value", "takes a list"),
    (cond("acl", "contains_any", [1]), "value[0]", "list of strings"),
    (cond("title", "exists", True), "operator", "every chunk has"),
    (cond("metadata.x", "exists", "yes"), "value", "true or false"),
    (cond("metadata.x", ">", True), "value", "not booleans"),
    (cond("metadata.x", "contains_any", [True]), "value", "not booleans"),
    (cond("metadata.x", "in", []), "value", "non-empty"),
    (cond("metadata.x", "in", ["a", 1]), "value", "mixes"),
    (cond("metadata.x", "in", list(range(1025))), "value", "1024"),
    (cond("metadata.x", "==", "a" * 4097), "value", "4096"),
    (cond("metadata.x", "==", "a\x00b"), "value", "NUL"),
    (cond("metadata.x", "in", ["ok", "a\x00b"]), "value[1]", "NUL"),
    (cond("metadata.x", "==", "\ud800"), "value", "surrogate"),
    (cond("metadata.x", "==", float("nan")), "value", "finite"),
    (cond("metadata.x", "==", 2**63), "value", "64-bit"),
    (cond("metadata.x", "==", None), "value", "does not fit"),
    (cond("metadata.x", "==", {"a": 1}), "value", "does not fit"),
    ({"field": "title", "operator": "=="}, "value", "missing"),
    ({"field": "title", "operator": "==", "value": "a", "extra": 1}, "(root)", "unknown key"),
    ({"operator": "AND", "conditions": [], }, "conditions", "at least one"),
    ({"operator": "AND", "conditions": cond("title", "==", "a")}, "conditions", "list"),
    ({"operator": "OR", "conditions": [cond("title", "==", "a"), "title == a"]}, "conditions[1]", "expected an object"),
    ({"conditions": [cond("title", "==", "a")]}, "(root)", "needs 'operator'"),
    ({"operator": "NOT", "conditions": [{"operator": "AND", "conditions": [cond("start", "<", "9")]}]},
     "conditions[0].conditions[0].value", "int"),
    (nest(MAX_DEPTH + 1), "conditions[0]", "deeper than 16"),
    ({"operator": "OR", "conditions": [cond("start", "==", i) for i in range(MAX_CONDITIONS + 1)]},
     f"conditions[{MAX_CONDITIONS}]", "more than 256"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "part", "word"), BAD)
def test_bad_filters_raise_naming_the_part(spec: Any, part: str, word: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(spec)
    message = str(info.value)
    assert message.startswith("filter "), message
    assert f"filter {part}:" in message or f".{part}:" in message or f"filter {part} " in message, message
    assert word in message, message


def test_depth_and_count_limits_are_inclusive() -> None:
    assert parse_filter(nest(MAX_DEPTH)) is not None
    many = {"operator": "OR", "conditions": [cond("start", "==", i) for i in range(MAX_CONDITIONS)]}
    assert isinstance(parse_filter(many), Logical)


def test_limits_false_skips_sizes_but_not_types() -> None:
    big = Condition("chunk_id", "not in", [f"c{i}" for i in range(5000)])
    checked = parse_filter(big, limits=False)
    assert isinstance(checked, Condition) and len(checked.value) == 5000
    with pytest.raises(FilterError):
        parse_filter(big)
    with pytest.raises(FilterError, match="unknown field"):
        parse_filter(Condition('x") or (1==1', "==", "a"), limits=False)
    with pytest.raises(FilterError, match="NUL"):
        parse_filter(Condition("title", "==", "\x00"), limits=False)


def test_parse_normalizes_lists_to_tuples_and_accepts_nodes() -> None:
    node = parse_filter(cond("acl", "contains_any", ["a", "b"]))
    assert node == Condition("acl", "contains_any", ("a", "b"))
    assert parse_filter(Condition("acl", "contains_any", ["a", "b"])) == node
    assert parse_filter(None) is None
    assert to_dict(node) == cond("acl", "contains_any", ["a", "b"])


def test_and_skips_none_and_flattens() -> None:
    a, b, c = (Condition("start", "==", i) for i in range(3))
    assert and_() is None and and_(None, None) is None
    assert and_(a, None) == a
    assert and_(Logical("AND", (a, b)), c) == Logical("AND", (a, b, c))
    assert and_(Logical("OR", (a, b)), c) == Logical("AND", (Logical("OR", (a, b)), c))


# ------------------------------------------------------------------------------------------ semantics
REC: dict[str, Any] = {
    "doc_id": "d1", "chunk_id": "c1", "title": "Refund policy", "acl": ["g:sales"], "deny": [], "public": False,
    "tenant": "acme", "language": "en", "start": 10, "end": 20, "chunk_index": 1,
    "metadata": {"cat": "refund", "n": 1, "f": 2.5, "flag": True, "one": 1, "tags": ["a", "b"], "nums": [1, 2.0],
                 "empty": [], "null": None, "zero": 0, "blank": "", "no": False, "deep": {"a": {"b": "x"}}},
}  # fmt: skip

TABLE: list[tuple[Any, bool]] = [
    (cond("metadata.cat", "==", "refund"), True),
    (cond("metadata.cat", "!=", "refund"), False),
    (cond("metadata.missing", "==", "refund"), False),
    (cond("metadata.missing", "!=", "refund"), True),  # missing matches the negative operators
    (cond("metadata.missing", "in", ["refund"]), False),
    (cond("metadata.missing", "not in", ["refund"]), True),
    (cond("metadata.missing", ">", 0), False),
    (cond("metadata.missing", "<=", 0), False),
    ({"operator": "NOT", "conditions": [cond("metadata.missing", ">", 0)]}, True),
    (cond("metadata.n", "==", 1.0), True),  # numbers by value
    (cond("metadata.n", "==", "1"), False),  # typed
    (cond("metadata.n", "!=", "1"), True),
    (cond("metadata.one", "==", True), False),  # 1 is not True
    (cond("metadata.flag", "==", 1), False),
    (cond("metadata.flag", "==", True), True),
    (cond("metadata.flag", "in", [True, False]), True),
    (cond("metadata.f", ">", 2), True),
    (cond("metadata.f", ">", "2"), False),  # a number never compares with a string
    (cond("metadata.cat", ">", "re"), True),
    (cond("metadata.cat", "<", "s"), True),
    (cond("metadata.cat", ">", 1), False),
    (cond("metadata.null", "==", "x"), False),
    (cond("metadata.null", "!=", "x"), True),
    (cond("metadata.tags", "==", "a"), False),  # scalar operators do not look into lists
    (cond("metadata.tags", "in", ["a"]), False),
    (cond("metadata.tags", "not in", ["a"]), True),
    (cond("metadata.tags", "contains_any", ["z", "b"]), True),
    (cond("metadata.tags", "contains_any", ["z"]), False),
    (cond("metadata.cat", "contains_any", ["refund"]), True),  # a scalar counts as a one-item list
    (cond("metadata.nums", "contains_any", [2]), True),
    (cond("metadata.nums", "contains_any", ["1"]), False),
    (cond("metadata.empty", "contains_any", ["a"]), False),
    (cond("metadata.missing", "contains_any", ["a"]), False),
    (cond("metadata.deep.a.b", "==", "x"), True),
    (cond("metadata.deep.a", "==", "x"), False),
    (cond("metadata.deep.a.b.c", "==", "x"), False),
    (cond("metadata.cat", "exists", True), True),
    (cond("metadata.zero", "exists", True), True),
    (cond("metadata.blank", "exists", True), True),
    (cond("metadata.no", "exists", True), True),
    (cond("metadata.deep", "exists", True), True),
    (cond("metadata.null", "exists", True), False),
    (cond("metadata.empty", "exists", True), False),
    (cond("metadata.empty", "exists", False), True),
    (cond("metadata.missing", "exists", False), True),
    (cond("acl", "exists", True), True),
    (cond("deny", "exists", False), True),
    (cond("acl", "contains_any", ["g:sales", "x"]), True),
    (cond("deny", "contains_any", ["g:sales"]), False),
    (cond("start", ">=", 10), True),
    (cond("start", "in", [1, 2]), False),
    (cond("public", "!=", True), True),
    ({"operator": "AND", "conditions": [cond("start", "==", 10), cond("tenant", "==", "acme")]}, True),
    ({"operator": "OR", "conditions": [cond("start", "==", 11), cond("tenant", "==", "beta")]}, False),
    ({"operator": "NOT", "conditions": [cond("start", "==", 11), cond("tenant", "==", "beta")]}, True),
    ({"operator": "NOT", "conditions": [cond("start", "==", 11), cond("tenant", "==", "acme")]}, False),
]


@pytest.mark.parametrize(("spec", "expected"), TABLE)
def test_evaluator_semantics(spec: Any, expected: bool) -> None:
    assert evaluate(parse_filter(spec), REC) is expected


def test_evaluate_none_matches_and_lookup_missing() -> None:
    assert evaluate(None, {}) is True
    assert repr(lookup(REC, "metadata.nope")) == "MISSING"
    assert lookup(REC, "metadata.deep.a.b") == "x"
    # a record lacking a top-level field (a partial row) behaves like a missing key
    assert evaluate(parse_filter(cond("tenant", "!=", "acme")), {"chunk_id": "c"}) is True
    assert evaluate(parse_filter(cond("tenant", "==", "acme")), {"chunk_id": "c"}) is False


# ------------------------------------------------------------------------------------------ access
def visible(record: dict[str, Any], principals: list[str]) -> bool:
    """The rule, written independently: deny wins; else public or a shared principal."""
    ps = set(principals)
    if ps & set(record["deny"]):
        return False
    return bool(record["public"]) or bool(ps & set(record["acl"]))


@given(
    public=st.booleans(),
    acl=st.lists(st.sampled_from(["u:a", "u:b", "g:x", "g:y"]), max_size=3),
    deny=st.lists(st.sampled_from(["u:a", "u:b", "g:x", "g:y"]), max_size=2),
    principals=st.lists(st.sampled_from(["u:a", "u:b", "g:x", "g:y"]), max_size=3),
)
@settings(max_examples=200, deadline=None)
def test_acl_filter_truth_table(public: bool, acl: list[str], deny: list[str], principals: list[str]) -> None:
    record = {**REC, "public": public, "acl": acl, "deny": deny}
    assert evaluate(acl_filter(principals), record) is visible(record, principals)


def test_acl_filter_shapes_and_errors() -> None:
    assert acl_filter([]) == Condition("public", "==", True)
    node = acl_filter(["u:a", "u:a", "g:x"])
    assert to_dict(node)["conditions"][1] == {
        "operator": "NOT", "conditions": [cond("deny", "contains_any", ["u:a", "g:x"])]
    }  # fmt: skip
    assert parse_filter(node) == node  # valid in the language
    with pytest.raises(FilterError, match="list of strings"):
        acl_filter("u:a")
    with pytest.raises(FilterError, match="1024"):
        acl_filter([f"u:{i}" for i in range(1025)])
    with pytest.raises(FilterError, match="control character"):
        acl_filter(["u:a", "u:b\nc"])


def test_acl_filter_narrowing_shrinks_only_the_allow_side() -> None:
    """Deny is checked against EVERY held principal; narrow_to only restricts who grants access."""
    held = ["user:alice", "group:eng"]
    chunk = {"acl": ["group:eng"], "deny": ["user:alice"], "public": False}
    public_denied = {"acl": [], "deny": ["user:alice"], "public": True}
    for narrow in (None, ["group:eng"], [], ["group:eng", "group:admin"]):
        node = acl_filter(held, narrow_to=narrow)
        assert not evaluate(node, chunk), narrow
        assert not evaluate(node, public_denied), narrow
    eng_only = {"acl": ["group:eng"], "deny": [], "public": False}
    assert evaluate(acl_filter(held, narrow_to=["group:eng"]), eng_only)
    assert not evaluate(acl_filter(held, narrow_to=["user:alice"]), eng_only)
    assert not evaluate(acl_filter(["user:alice"], narrow_to=["group:eng"]), eng_only)  # never widened
    assert evaluate(acl_filter(held, narrow_to=[]), {"acl": [], "deny": [], "public": True})


def test_principals_are_normalized_nfc_and_trimmed() -> None:
    nfd = unicodedata.normalize("NFD", "user:jos\u00e9")
    assert nfd != "user:jos\u00e9"
    assert validate_principal(nfd) == "user:jos\u00e9"
    assert validate_principal(" group:eng \u3000") == "group:eng"
    assert validate_principal("\ufeffgroup:eng\u200b") == "group:eng"
    assert validate_principal("User:Alice") == "User:Alice"  # case is significant
    assert validate_principal("\uff47roup") == "\uff47roup"  # NFC, not NFKC: fullwidth stays distinct
    node = acl_filter([nfd, "user:jos\u00e9 "])
    assert evaluate(node, {"acl": ["user:jos\u00e9"], "deny": [], "public": False})
    assert not evaluate(node, {"acl": [], "deny": ["user:jos\u00e9"], "public": True})


@pytest.mark.parametrize(
    "good",
    [
        'x" || public == true || "',
        "') or (1==1",
        "a\\b",
        "\u202eevil",
        "👩\u200d💻",
        "{p0}",
        "u" * 256,
        "s t",
    ],
)
def test_validate_principal_accepts_literal_strings(good: str) -> None:
    assert validate_principal(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "u" * 257,
        "a\nb",
        "a\r\nb",
        " \t\n",
        "a\x00",
        "a\tb",
        "a\x7fb",
        "a\x85b",
        "a\u2028b",
        "\ud800",
        3,
        None,
        b"u",
    ],
)
def test_validate_principal_rejects(bad: Any) -> None:
    with pytest.raises(FilterError):
        validate_principal(bad)


# ------------------------------------------------------------------------------------------ round trips
KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
NUMBER = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))


def scalar_for(kind: str) -> st.SearchStrategy[Any]:
    return {"str": TEXT, "int": st.integers(-(2**63), 2**63 - 1), "bool": st.booleans()}[kind]


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from([*FIELDS, "metadata"]))
    if field == "metadata":
        field = "metadata." + ".".join(draw(st.lists(KEYS, min_size=1, max_size=4)))
        kind = draw(st.sampled_from(["str", "number", "bool"]))
        one = {"str": TEXT, "number": NUMBER, "bool": st.booleans()}[kind]
        ops = ["==", "!=", "in", "not in", "exists"] + (["contains_any"] if kind != "bool" else [])
        ops += [">", ">=", "<", "<="] if kind != "bool" else []
    elif FIELDS[field] == "list":
        one, ops = TEXT.filter(bool), ["contains_any", "exists"]
    else:
        kind = FIELDS[field]
        one = scalar_for(kind)
        ops = ["==", "!="] if kind == "bool" else ["==", "!=", "in", "not in", ">", ">=", "<", "<="]
    op = draw(st.sampled_from(ops))
    if op == "exists":
        value: Any = draw(st.booleans())
    elif op in ("in", "not in", "contains_any"):
        value = draw(st.lists(one, min_size=1, max_size=4))
    else:
        value = draw(one)
    return cond(field, op, value)


FILTERS = st.recursive(
    conditions(),
    lambda children: st.builds(
        lambda op, cs: {"operator": op, "conditions": cs},
        st.sampled_from(["AND", "OR", "NOT"]),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=12,
)


@given(FILTERS)
@settings(max_examples=300, deadline=None)
def test_round_trip(spec: dict[str, Any]) -> None:
    node = parse_filter(spec)
    assert node is not None
    assert parse_filter(to_dict(node)) == node
    assert parse_filter(json.loads(json.dumps(to_dict(node)))) == node  # JSON-safe
    assert parse_filter(node) == node  # validating a node is idempotent


RECORDS = st.fixed_dictionaries(
    {"title": st.sampled_from(["a", "b"]), "start": st.integers(0, 3), "public": st.booleans(),
     "acl": st.lists(st.sampled_from(["u", "g"]), max_size=2), "deny": st.lists(st.sampled_from(["u"]), max_size=1),
     "metadata": st.dictionaries(st.sampled_from(["k", "n"]),
                                 st.one_of(st.none(), st.sampled_from(["a", "b"]), st.integers(0, 3), st.booleans(),
                                           st.lists(st.sampled_from(["a", 1]), max_size=2)), max_size=2)}
)  # fmt: skip
LEAVES = st.sampled_from(
    [cond("metadata.k", "==", "a"), cond("metadata.n", "in", [1, 2]), cond("metadata.n", ">", 1),
     cond("metadata.k", "contains_any", ["a", "b"]), cond("metadata.k", "exists", True), cond("title", "<", "b"),
     cond("acl", "contains_any", ["u"]), cond("public", "==", True), cond("start", ">=", 2)]
)  # fmt: skip


@given(leaf=LEAVES, record=RECORDS)
@settings(max_examples=300, deadline=None)
def test_negations_are_complements(leaf: dict[str, Any], record: dict[str, Any]) -> None:
    node = parse_filter(leaf)
    negated = parse_filter({"operator": "NOT", "conditions": [leaf]})
    assert evaluate(negated, record) is (not evaluate(node, record))
    flipped = {"==": "!=", "in": "not in"}.get(leaf["operator"])
    if flipped:
        assert evaluate(parse_filter({**leaf, "operator": flipped}), record) is (not evaluate(node, record))
    if leaf["operator"] == "exists":
        assert evaluate(parse_filter({**leaf, "value": False}), record) is (not evaluate(node, record))
