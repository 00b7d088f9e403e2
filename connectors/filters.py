"""The one filter language of cjkrag: AST, validation, the reference evaluator and the access filter.

Access control and user filters both go through here, and every backend translator
(``connectors/<backend>/filters.py``) starts from a node this module validated, so a translator never sees an
unknown field, operator or value type. The language, its exact semantics (missing keys, types, lists) and
what each backend does are documented in ``connectors/FILTERS.md``.

A condition ``{"field": "metadata.category", "operator": "==", "value": "refund"}``; logic
``{"operator": "AND" | "OR" | "NOT", "conditions": [...]}`` (NOT: none of its conditions holds).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cjkrag.errors import FilterError


@dataclass(frozen=True)
class Condition:
    field: str  # "doc_id", "public", "acl", "metadata.category", ...
    operator: str  # "==", "!=", "in", "not in", ">", ">=", "<", "<=", "contains_any", "exists"
    value: Any


@dataclass(frozen=True)
class Logical:
    operator: Literal["AND", "OR", "NOT"]
    conditions: tuple[FilterNode, ...]


FilterNode = Condition | Logical

# ---------------------------------------------------------------------------------------------- the grammar
STRING_FIELDS = ("doc_id", "chunk_id", "title", "tenant", "language")
INT_FIELDS = ("start", "end", "chunk_index")
BOOL_FIELDS = ("public",)
LIST_FIELDS = ("acl", "deny")
FIELDS: dict[str, str] = {
    **{f: "str" for f in STRING_FIELDS},
    **{f: "int" for f in INT_FIELDS},
    **{f: "bool" for f in BOOL_FIELDS},
    **{f: "list" for f in LIST_FIELDS},
}
"""Top-level field -> kind ("str", "int", "bool", "list"); plus ``metadata.<key>[.<key>...]`` (kind "any")."""

EQUALITY = ("==", "!=")
MEMBERSHIP = ("in", "not in")
COMPARISON = (">", ">=", "<", "<=")
OPERATORS = (*EQUALITY, *MEMBERSHIP, *COMPARISON, "contains_any", "exists")
LOGICAL_OPERATORS = ("AND", "OR", "NOT")

MAX_DEPTH = 16  # nested logic levels
MAX_CONDITIONS = 256  # leaf conditions in one filter
MAX_LIST_ITEMS = 1024
MAX_STRING_CHARS = 4096
MAX_PATH_DEPTH = 4  # metadata.a.b.c.d
MAX_PRINCIPAL_CHARS = 256
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # Milvus INT64 / JSON numbers

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS_FOR: dict[str, tuple[str, ...]] = {
    "str": (*EQUALITY, *MEMBERSHIP, *COMPARISON),
    "int": (*EQUALITY, *MEMBERSHIP, *COMPARISON),
    "bool": EQUALITY,
    "list": ("contains_any", "exists"),
    "any": OPERATORS,
}
_EXAMPLE = {"str": "'refund'", "int": "42", "bool": "true", "number": "3.5", "list": "['group:support']"}


def metadata_path(field: str) -> tuple[str, ...] | None:
    """``"metadata.a.b"`` -> ``("a", "b")``; None for a top-level field. Assumes a validated field."""
    return tuple(field.split(".")[1:]) if field.startswith("metadata.") else None


def field_kind(field: str) -> str:
    """The kind of a validated field: "str", "int", "bool", "list" or "any" (metadata)."""
    return FIELDS.get(field, "any")


def value_kind(value: Any) -> str:
    """The filter-language type of a scalar: "bool", "number", "str" (bool is not a number)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------- validation
class _Check:
    def __init__(self, limits: bool) -> None:
        self.limits = limits
        self.conditions = 0

    def fail(self, path: str, message: str) -> FilterError:
        return FilterError(f"filter {path or '(root)'}: {message}")

    def node(self, spec: Any, path: str, depth: int) -> FilterNode:
        if isinstance(spec, Condition):
            return self.condition(spec.field, spec.operator, spec.value, path)
        if isinstance(spec, Logical):
            return self.logical(spec.operator, spec.conditions, path, depth)
        if not isinstance(spec, Mapping):
            raise self.fail(
                path,
                f"expected an object, got {type(spec).__name__} {_short(spec)}: write a condition "
                '{"field": ..., "operator": ..., "value": ...} or {"operator": "AND", "conditions": [...]}',
            )
        keys = set(spec)
        if "conditions" in keys:
            extra = keys - {"operator", "conditions"}
            if extra:
                raise self.fail(
                    path,
                    f"unknown key(s) {sorted(map(str, extra))} in a logic node: use only "
                    "'operator' and 'conditions'",
                )
            if "operator" not in keys:
                raise self.fail(path, "a logic node needs 'operator': one of AND, OR, NOT")
            return self.logical(spec["operator"], spec["conditions"], path, depth)
        extra = keys - {"field", "operator", "value"}
        if extra:
            raise self.fail(
                path,
                f"unknown key(s) {sorted(map(str, extra))}: a condition has exactly 'field', "
                "'operator' and 'value'; a logic node has 'operator' and 'conditions'",
            )
        for key in ("field", "operator", "value"):
            if key not in keys:
                raise self.fail(
                    _join(path, key), "missing: a condition needs 'field', 'operator' and 'value'"
                )
        return self.condition(spec["field"], spec["operator"], spec["value"], path)

    def logical(self, operator: Any, conditions: Any, path: str, depth: int) -> Logical:
        if operator not in LOGICAL_OPERATORS:
            hint = (
                f" (write {operator.upper()!r})"
                if isinstance(operator, str) and operator.upper() in LOGICAL_OPERATORS
                else ""
            )
            raise self.fail(
                _join(path, "operator"),
                f"unknown logic operator {_short(operator)}{hint}: use AND, OR or NOT",
            )
        if depth >= MAX_DEPTH:
            raise self.fail(path, f"logic nested deeper than {MAX_DEPTH} levels: flatten the filter")
        if isinstance(conditions, (str, bytes, Mapping)) or not isinstance(conditions, (Sequence, tuple)):
            raise self.fail(
                _join(path, "conditions"), f"expected a list of conditions, got {type(conditions).__name__}"
            )
        if not conditions:
            raise self.fail(_join(path, "conditions"), f"{operator} needs at least one condition")
        children = tuple(
            self.node(c, _join(path, f"conditions[{i}]"), depth + 1) for i, c in enumerate(conditions)
        )
        return Logical(operator, children)

    def condition(self, field: Any, operator: Any, value: Any, path: str) -> Condition:
        self.conditions += 1
        if self.limits and self.conditions > MAX_CONDITIONS:
            raise self.fail(
                path, f"more than {MAX_CONDITIONS} conditions in one filter: use 'in' with a list"
            )
        kind = self.field(field, _join(path, "field"))
        if operator not in OPERATORS:
            raise self.fail(
                _join(path, "operator"),
                f"unknown operator {_short(operator)}: use one of {', '.join(OPERATORS)}",
            )
        if operator not in _OPERATORS_FOR[kind]:
            raise self.fail(_join(path, "operator"), _wrong_operator(field, kind, operator))
        return Condition(field, operator, self.value(field, kind, operator, value, _join(path, "value")))

    def field(self, field: Any, path: str) -> str:
        if not isinstance(field, str):
            raise self.fail(path, f"expected a field name, got {type(field).__name__} {_short(field)}")
        if field in FIELDS:
            return FIELDS[field]
        if field.startswith("metadata."):
            keys = field.split(".")[1:]
            if len(keys) > MAX_PATH_DEPTH:
                raise self.fail(
                    path,
                    f"{field!r} is nested {len(keys)} levels: at most {MAX_PATH_DEPTH} keys after 'metadata.'",
                )
            for key in keys:
                if not _KEY.fullmatch(key):
                    raise self.fail(
                        path,
                        f"metadata key {key!r} in {_short(field)} is not a name: each key must match "
                        "[A-Za-z_][A-Za-z0-9_]* (letters, digits, underscores)",
                    )
            return "any"
        raise self.fail(
            path, f"unknown field {_short(field)}: use one of {', '.join(FIELDS)} or metadata.<key>"
        )

    def value(self, field: str, kind: str, operator: str, value: Any, path: str) -> Any:
        if operator == "exists":
            if not isinstance(value, bool):
                raise self.fail(path, f"'exists' takes true or false, got {_short(value)}")
            return value
        if operator in MEMBERSHIP or operator == "contains_any":
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
                raise self.fail(
                    path,
                    f"{operator!r} takes a list, got {type(value).__name__} {_short(value)}: "
                    f"write [{_short(value)}]",
                )
            if not value:
                raise self.fail(path, f"{operator!r} needs a non-empty list")
            if self.limits and len(value) > MAX_LIST_ITEMS:
                raise self.fail(
                    path, f"list of {len(value)} items, over the limit of {MAX_LIST_ITEMS}: split the filter"
                )
            items = tuple(self.scalar(field, kind, operator, v, f"{path}[{i}]") for i, v in enumerate(value))
            kinds = {value_kind(v) for v in items}
            if len(kinds) > 1:
                raise self.fail(
                    path, f"the list mixes {' and '.join(sorted(kinds))} values: use one type per list"
                )
            if operator == "contains_any" and "bool" in kinds:
                raise self.fail(
                    path, "'contains_any' takes strings or numbers, not booleans: use '==' on a bool"
                )
            return items
        scalar = self.scalar(field, kind, operator, value, path)
        if operator in COMPARISON and isinstance(scalar, bool):
            raise self.fail(path, f"{operator!r} compares numbers or strings, not booleans: use '==' or '!='")
        return scalar

    def scalar(self, field: str, kind: str, operator: str, value: Any, path: str) -> Any:
        want = "str" if kind == "list" else kind
        if isinstance(value, bool):
            ok = want in ("bool", "any")
        elif isinstance(value, int):
            ok = want in ("int", "any")
            if ok and not INT_MIN <= value <= INT_MAX:
                raise self.fail(path, f"{value} is outside the 64-bit integer range")
        elif isinstance(value, float):
            ok = want == "any"
            if ok and not math.isfinite(value):
                raise self.fail(path, f"{value} is not a finite number")
        elif isinstance(value, str):
            ok = want in ("str", "any")
            if ok:
                _check_string(value, lambda msg: self.fail(path, msg), self.limits)
        else:
            ok = False
        if not ok:
            example = (
                _EXAMPLE["str" if kind == "list" else kind] if kind != "any" else "a string, number or bool"
            )
            raise self.fail(
                path,
                f"{_short(value)} ({type(value).__name__}) does not fit field {field!r} "
                f"({'a list of strings' if kind == 'list' else kind}): give {example}",
            )
        return value


def _check_string(value: str, fail: Any, limits: bool) -> None:
    if limits and len(value) > MAX_STRING_CHARS:
        raise fail(f"a string of {len(value)} characters, over the limit of {MAX_STRING_CHARS}")
    if "\x00" in value:
        raise fail("the string holds a NUL character (\\x00), which no backend stores or matches: remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise fail("the string holds a lone surrogate (not valid Unicode): send valid UTF-8 text") from None


def _wrong_operator(field: str, kind: str, operator: str) -> str:
    allowed = ", ".join(_OPERATORS_FOR[kind])
    if kind in ("str", "int", "bool") and operator == "exists":
        return (
            f"{field!r} is a top-level field every chunk has, so 'exists' does not apply (allowed: {allowed})"
        )
    if kind == "list":
        return f"{field!r} is a list of principals: use 'contains_any' (or 'exists'), not {operator!r}"
    return f"{operator!r} does not apply to {field!r} ({kind}): use one of {allowed}"


def _join(path: str, part: str) -> str:
    if not path:
        return part
    return f"{path}{part}" if part.startswith("[") else f"{path}.{part}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_filter(spec: Mapping[str, Any] | FilterNode | None, *, limits: bool = True) -> FilterNode | None:
    """Validate a filter (a JSON-like dict or an AST node) and return it as a normalized AST node.

    List values become tuples. Raises FilterError whose message names the part (``conditions[1].value``)
    and the fix. ``limits=False`` skips the size limits (list length, string length, condition count),
    for internally built nodes; translators use it, so every node they see is type-checked.
    """
    if spec is None:
        return None
    return _Check(limits).node(spec, "", 0)


def to_dict(node: FilterNode) -> dict[str, Any]:
    """The JSON-like form of a node (``parse_filter(to_dict(n)) == n`` for a normalized ``n``)."""
    if isinstance(node, Condition):
        value = list(node.value) if isinstance(node.value, (list, tuple)) else node.value
        return {"field": node.field, "operator": node.operator, "value": value}
    return {"operator": node.operator, "conditions": [to_dict(c) for c in node.conditions]}


def and_(*nodes: FilterNode | None) -> FilterNode | None:
    """AND of the given nodes, skipping None; None when none is left; nested ANDs are flattened."""
    parts: list[FilterNode] = []
    for node in nodes:
        if node is None:
            continue
        if isinstance(node, Logical) and node.operator == "AND":
            parts.extend(node.conditions)
        else:
            parts.append(node)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Logical("AND", tuple(parts))


# ---------------------------------------------------------------------------------------------- evaluation
class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What :func:`lookup` returns for an absent field or metadata key."""


def lookup(record: Mapping[str, Any], field: str) -> Any:
    """The value of ``field`` in an ``as_filterable()``-shaped record; :data:`MISSING` when absent."""
    path = metadata_path(field)
    if path is None:
        return record.get(field, MISSING)
    value: Any = record.get("metadata", MISSING)
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return MISSING
        value = value[key]
    return value


def _same(stored: Any, value: Any) -> bool:
    """Typed equality: bool only equals bool, numbers equal numerically (1 == 1.0), str equals str."""
    kind = value_kind(value)
    return value_kind(stored) == kind and kind in ("bool", "number", "str") and stored == value


def _holds(cond: Condition, record: Mapping[str, Any]) -> bool:
    stored = lookup(record, cond.field)
    op, value = cond.operator, cond.value
    if op == "exists":
        present = (
            stored is not MISSING
            and stored is not None
            and not (isinstance(stored, (list, tuple)) and not stored)
        )
        return present is value
    if op == "==":
        return _same(stored, value)
    if op == "!=":
        return not _same(stored, value)
    if op == "in":
        return any(_same(stored, v) for v in value)
    if op == "not in":
        return not any(_same(stored, v) for v in value)
    if op == "contains_any":
        items = stored if isinstance(stored, (list, tuple)) else [stored]
        return any(_same(item, v) for item in items for v in value)
    kind = value_kind(value)  # comparisons: typed; a missing key or another type never compares
    if value_kind(stored) != kind or kind not in ("number", "str"):
        return False
    if op == ">":
        return bool(stored > value)
    if op == ">=":
        return bool(stored >= value)
    if op == "<":
        return bool(stored < value)
    return bool(stored <= value)


def evaluate(node: FilterNode | None, record: Mapping[str, Any]) -> bool:
    """The reference semantics (FILTERS.md): does ``record`` (``ChunkRecord.as_filterable()`` shape) match?

    ``node`` must be validated (``parse_filter``); None matches everything.
    """
    if node is None:
        return True
    if isinstance(node, Condition):
        return _holds(node, record)
    if node.operator == "AND":
        return all(evaluate(c, record) for c in node.conditions)
    if node.operator == "OR":
        return any(evaluate(c, record) for c in node.conditions)
    return not any(evaluate(c, record) for c in node.conditions)


# ---------------------------------------------------------------------------------------------- access
_EDGE_INVISIBLES = "\u200b\ufeff"  # zero-width space and BOM: invisible, left at the ends by copy-paste


def normalize_principal(p: str) -> str:
    """The one normal form of a principal: surrounding whitespace (and zero-width space / BOM) trimmed, then
    Unicode NFC. Case is kept (``user:Alice`` and ``user:alice`` stay two principals). No validation."""
    return unicodedata.normalize("NFC", p.strip().strip(_EDGE_INVISIBLES).strip())


def validate_principal(p: str) -> str:
    """A principal in its normal form (:func:`normalize_principal`), if acceptable; raises FilterError otherwise.

    Acceptable once normalized: a non-empty str of <= 256 characters with no control characters,
    line/paragraph separators or lone surrogates. Matched literally after normalization (quotes, backslashes,
    RTL marks and emoji are fine). Every principal on the way in goes through here: CLI and API values, the
    API-keys file, JWT claims, and the acl/deny lists of every ingested document.
    """
    if not isinstance(p, str):
        raise FilterError(
            f"principal {_short(p)} is a {type(p).__name__}: principals are strings such as 'group:support'"
        )
    normal = normalize_principal(p)
    for ch in normal:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs"):
            raise FilterError(
                f"principal {_short(p)} holds the control character {ch!r} (NUL, tab, newline and other control "
                "characters are not allowed in principals): fix the identity provider's value"
            )
    if not normal:
        raise FilterError(
            f"principal {_short(p)} is empty once trimmed: principals are non-empty strings such as 'user:alice'"
        )
    if len(normal) > MAX_PRINCIPAL_CHARS:
        raise FilterError(
            f"principal {_short(p)} has {len(normal)} characters, over the limit of {MAX_PRINCIPAL_CHARS}"
        )
    return normal


def _principal_tuple(principals: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(principals, str):
        raise FilterError(f"{what} must be a list of strings, not one string: write [principal]")
    seen: dict[str, None] = {}
    for p in principals:
        seen[validate_principal(p)] = None
    if len(seen) > MAX_LIST_ITEMS:
        raise FilterError(f"{len(seen)} {what}, over the limit of {MAX_LIST_ITEMS}: map users to groups")
    return tuple(seen)


def acl_filter(principals: Sequence[str], *, narrow_to: Sequence[str] | None = None) -> FilterNode:
    """Chunks the caller may read: ``(public == true OR acl contains_any A) AND NOT (deny contains_any P)``.

    ``principals`` (P) are ALL the principals the caller holds (from authentication or the host app).
    ``narrow_to``, when given, restricts the allow side: A = P ∩ narrow_to (entries the caller does not
    hold are ignored, never added). Deny is always checked against every principal in P, so narrowing can
    only hide chunks, never reveal one that a held principal is denied. Deny wins over public and acl; no
    principals: public chunks only. Every entry is validated and normalized (:func:`validate_principal`).
    """
    held = _principal_tuple(principals, "principals")
    allow = held
    if narrow_to is not None:
        wanted = set(_principal_tuple(narrow_to, "narrowing principals"))
        allow = tuple(p for p in held if p in wanted)
    public = Condition("public", "==", True)
    readable: FilterNode = Logical("OR", (public, Condition("acl", "contains_any", allow))) if allow else public
    if not held:
        return public
    return Logical("AND", (readable, Logical("NOT", (Condition("deny", "contains_any", held),))))
