"""Filter language -> Milvus boolean expression (see ``connectors/FILTERS.md``, section Milvus).

``translate(node)`` returns ``(expr, params)``: every value is a template parameter (``{p0}``, ``{p1}``...)
for ``client.search(..., filter=expr, filter_params=params)`` on a Milvus server (2.5 expression templates).
Field names come only from the validated grammar (top-level names, ``metadata["key"]`` with keys matching
``[A-Za-z_][A-Za-z0-9_]*``), never from user strings.

Milvus Lite 2.5.1 (verified on the pinned wheel): no expression templates (``{p0}`` is a parse error, which
pymilvus then retries until its timeout), no ``not (...)`` ("unsupported expr proto node"), no ``exists``,
and a flat chain of more than about 50 ``and``/``or`` operands fails the same way. So:

- :func:`render` inlines the parameters as literals; strings go through :func:`escape_string_literal`, the
  one escaping function (Lite decodes only ``\\\\``, ``\\"`` and ``\\'``; it takes tabs and other control
  characters verbatim and rejects raw line breaks, which it cannot match either way: FilterError).
- ``translate(node, lite=True)`` pushes every NOT down to the conditions (De Morgan) and writes each negated
  condition as its exact complement: ``== / !=``, ``in / not in``, ``> / <=``... on top-level fields;
  ``== / !=`` and ``in / not in`` on metadata (Milvus' ``!=`` and ``not in`` on JSON match a missing key, a
  null or another type, i.e. exactly the complement); NOT ``acl``/``deny`` ``contains_any`` P as
  ``deny[0] not in P and ... and deny[N-1] not in P`` over the array capacity N (Lite answers ``not in``
  true past an array's end; were it ever false, chunks would be hidden, never shown). What has no
  complement in Lite (NOT of a metadata comparison or ``contains_any``, metadata ``exists``) goes to the
  caller's ``resolve(node) -> chunk ids`` (``chunk_id in / not in [...]``), or raises FilterError.
  Lite does not enforce an ARRAY field's ``max_capacity`` (nor ``max_length``) on insert: the store must
  refuse longer ``acl``/``deny`` lists itself (``schema.record_to_row`` does), or the expansion would not
  reach the extra items.
- ``and`` / ``or`` chains are written as balanced binary trees.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from cjkrag.connectors.filters import (
    COMPARISON,
    Condition,
    FilterNode,
    field_kind,
    metadata_path,
    parse_filter,
    value_kind,
)
from cjkrag.connectors.milvus.schema import ARRAY_CAPACITY
from cjkrag.errors import FilterError

Resolver = Callable[[FilterNode], Sequence[str]]
"""Given a validated node, the ``chunk_id`` of every stored chunk matching it (Milvus Lite fallback)."""

ALWAYS_TRUE = 'chunk_id >= ""'  # every string is >= ""
ALWAYS_FALSE = 'chunk_id < ""'  # no string is < ""
DEFAULT_ARRAY_CAPACITY = ARRAY_CAPACITY  # the schema's max_capacity of acl / deny

_FLIP = {"==": "!=", "!=": "==", "in": "not in", "not in": "in", ">": "<=", ">=": "<", "<": ">=", "<=": ">"}
_PLACEHOLDER = re.compile(r"\{(p[0-9]+)\}")


class _Const:
    def __init__(self, value: bool) -> None:
        self.value = value


_TRUE, _FALSE = _Const(True), _Const(False)
_Part = str | _Const


def escape_string_literal(value: str) -> str:
    """``value`` as a double-quoted Milvus string literal that matches exactly ``value``.

    Escapes backslash, double quote and single quote. Raises FilterError for NUL, CR and LF (Milvus cannot
    match them: a raw line break is a syntax error and Lite does not decode ``\\n``). Tabs and other control
    characters, RTL marks, emoji, CJK are written as they are (Lite compares them verbatim; verified).
    """
    if not isinstance(value, str):
        raise FilterError(f"expected a string for a Milvus literal, got {type(value).__name__}")
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "'":
            out.append("\\'")
        elif ch in ("\n", "\r", "\x00"):
            raise FilterError(
                f"filter value {value[:60]!r} holds {ch!r}: Milvus expressions cannot match line breaks or NUL "
                "(Milvus Lite does not decode escapes): remove it from the value"
            )
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def literal(value: Any) -> str:
    """A parameter value (str, int, float, bool or a list of them) as a Milvus literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise FilterError(f"filter value {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return escape_string_literal(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise FilterError(f"filter value {value!r} ({type(value).__name__}) has no Milvus literal form")


def render(expr: str, params: dict[str, Any]) -> str:
    """Inline ``{pN}`` parameters as literals (one pass: a value that looks like ``{p1}`` stays a value)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in params:
            raise FilterError(f"Milvus filter uses {{{name}}} but no such parameter was given")
        return literal(params[name])

    return _PLACEHOLDER.sub(sub, expr)


def field_ref(field: str) -> str:
    """The Milvus reference of a validated field: ``title`` or ``metadata["a"]["b"]``."""
    path = metadata_path(field)
    if path is None:
        return field
    return "metadata" + "".join(f'["{key}"]' for key in path)


class _Translator:
    def __init__(self, lite: bool, resolve: Resolver | None, expand_arrays: bool, capacity: int) -> None:
        self.lite = lite
        self.resolve = resolve
        self.expand_arrays = expand_arrays
        self.capacity = capacity
        self.params: dict[str, Any] = {}

    def param(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list) and {type(v) for v in value} == {int, float}:
            value = [float(v) for v in value]  # Milvus wants one element type per list
        self.params[name] = value
        return "{" + name + "}"

    # -- composition ------------------------------------------------------------------------------------
    def combine(self, op: str, parts: Sequence[_Part]) -> _Part:
        absorbing, neutral = (_FALSE, _TRUE) if op == "and" else (_TRUE, _FALSE)
        kept: list[str] = []
        for part in parts:
            if isinstance(part, _Const):
                if part.value is absorbing.value:
                    return absorbing
                continue
            kept.append(part)
        if not kept:
            return neutral
        return self._balanced(op, kept)

    def _balanced(self, op: str, parts: list[str]) -> str:
        if len(parts) == 1:
            return parts[0]
        mid = len(parts) // 2
        return f"({self._balanced(op, parts[:mid])}) {op} ({self._balanced(op, parts[mid:])})"

    # -- server: NOT written as not (...) -----------------------------------------------------------------
    def plain(self, node: FilterNode) -> str:
        if isinstance(node, Condition):
            return self.positive(node)
        parts = [self.plain(c) for c in node.conditions]
        if node.operator == "NOT":
            return f"not ({self._balanced('or', parts)})"
        return self._balanced("and" if node.operator == "AND" else "or", parts)

    # -- lite: negation normal form -----------------------------------------------------------------------
    def nnf(self, node: FilterNode, negated: bool) -> _Part:
        if isinstance(node, Condition):
            return self.negative(node) if negated else self.positive_lite(node)
        if node.operator == "NOT":  # NOT(a, b) = AND(not a, not b); NOT NOT(a, b) = OR(a, b)
            return self.combine(
                "or" if negated else "and", [self.nnf(c, not negated) for c in node.conditions]
            )
        op = "and" if node.operator == "AND" else "or"
        if negated:
            op = "or" if op == "and" else "and"
        return self.combine(op, [self.nnf(c, negated) for c in node.conditions])

    def positive_lite(self, c: Condition) -> _Part:
        if c.operator == "exists" and field_kind(c.field) == "any":
            return self.by_ids(c, "in", "metadata 'exists' (Milvus Lite 2.5.1 has no exists)")
        return self.positive(c)

    def negative(self, c: Condition) -> _Part:
        kind, ref, op = field_kind(c.field), field_ref(c.field), c.operator
        if kind in ("str", "int", "bool") or (kind == "any" and op in ("==", "!=", "in", "not in")):
            return self.positive(Condition(c.field, _FLIP[op], c.value))
        if kind == "list":
            if op == "exists":
                return self.positive(Condition(c.field, "exists", not c.value))
            if self.expand_arrays:
                p = self.param(c.value)
                return self.combine("and", [f"{ref}[{i}] not in {p}" for i in range(self.capacity)])
            return self.by_ids(c, "not in", f"NOT {c.field} contains_any (with expand_arrays=False)")
        return self.by_ids(c, "not in", f"NOT of {c.field} {c.operator} (Milvus Lite 2.5.1 has no NOT)")

    def by_ids(self, c: Condition, op: str, what: str) -> _Part:
        if self.resolve is None:
            raise FilterError(
                f"Milvus Lite cannot express {what}: use a Milvus server (translate(..., lite=False)), "
                "pass resolve= to match by chunk ids, or rewrite the filter without it"
            )
        ids = [str(i) for i in self.resolve(c)]
        if not ids:
            return _TRUE if op == "not in" else _FALSE
        return f"chunk_id {op} {self.param(ids)}"

    # -- conditions ---------------------------------------------------------------------------------------
    def positive(self, c: Condition) -> str:
        kind, ref, op, value = field_kind(c.field), field_ref(c.field), c.operator, c.value
        if op in ("==", "!=", *COMPARISON, "in", "not in"):
            return f"{ref} {op} {self.param(value)}"
        if op == "contains_any":
            p = self.param(value)
            if kind == "list":
                return f"array_contains_any({ref}, {p})"
            # a scalar, or any item of a list; Milvus matches list items by type, and an int parameter
            # misses a 2.0 item while a float one matches 2 and 2.0: numbers go in as floats
            items = [float(v) if value_kind(v) == "number" else v for v in value]
            return f"({ref} in {p} or json_contains_any({ref}, {self.param(items)}))"
        # exists
        if kind == "list":
            return f"array_length({ref}) {'!=' if value else '=='} 0"
        return f"exists {ref}" if value else f"not (exists {ref})"


def translate(
    node: FilterNode | None,
    *,
    lite: bool = False,
    resolve: Resolver | None = None,
    expand_arrays: bool = True,
    array_capacity: int = DEFAULT_ARRAY_CAPACITY,
) -> tuple[str, dict[str, Any]]:
    """``(expr, params)`` for Milvus; ``("", {})`` for no filter.

    ``lite=False`` (a Milvus server): NOT as ``not (...)``, ``exists`` as ``exists``. ``lite=True`` (Milvus
    Lite 2.5.1): no NOT, see the module doc; ``array_capacity`` must be at least the collection's
    ``max_capacity`` of ``acl``/``deny`` (fewer would let a denied principal through); ``resolve`` is used
    only for what Lite cannot express. Node values are validated (``parse_filter(node, limits=False)``).
    """
    checked = parse_filter(node, limits=False)
    if checked is None:
        return "", {}
    if isinstance(array_capacity, bool) or not isinstance(array_capacity, int) or array_capacity < 1:
        raise FilterError(f"array_capacity must be a positive int, got {array_capacity!r}")
    t = _Translator(lite, resolve, expand_arrays, array_capacity)
    if not lite:
        return t.plain(checked), t.params
    part = t.nnf(checked, negated=False)
    expr = (ALWAYS_TRUE if part.value else ALWAYS_FALSE) if isinstance(part, _Const) else part
    used = set(_PLACEHOLDER.findall(expr))  # parts simplified away leave their parameters unused
    return expr, {name: value for name, value in t.params.items() if name in used}


def to_expression(node: FilterNode | None, **options: Any) -> str:
    """``translate`` then ``render``: a literal expression (what Milvus Lite needs); "" for no filter."""
    expr, params = translate(node, **options)
    return render(expr, params)


__all__ = [
    "ALWAYS_FALSE",
    "ALWAYS_TRUE",
    "Resolver",
    "escape_string_literal",
    "field_ref",
    "literal",
    "render",
    "to_expression",
    "translate",
]
