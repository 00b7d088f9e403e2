"""Filter language -> ``qdrant_client.models.Filter`` (see ``connectors/FILTERS.md``, section Qdrant).

Payload keys are the field names; metadata is the nested payload object ``metadata`` addressed with dotted
keys (``metadata.category``). Values only ever appear as model values (``MatchValue(value=...)``), never
in a key or an expression string.

- ``==`` on a string or bool: ``MatchValue``; on a number: ``Range(gte=v, lte=v)`` for metadata (Qdrant's
  exact match never matches a float payload and keeps int/float apart; the language compares numbers by
  value) and ``MatchValue`` for the int fields ``start``/``end``/``chunk_index``.
- ``in`` / ``contains_any``: ``MatchAny`` for strings and ints, ``should`` of ranges for metadata numbers,
  ``should`` of ``MatchValue`` for booleans. ``!=`` / ``not in`` / NOT: ``must_not`` (complement: a missing
  key matches). ``>``... : ``Range`` on numbers; Qdrant cannot compare strings: FilterError.
- ``exists``: ``IsEmptyCondition`` (missing, null or ``[]``), inverted with ``must_not`` for true.
- AND: ``must``; OR: ``should`` (never empty: an empty ``should`` matches everything in Qdrant).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cjkrag.connectors.filters import (
    COMPARISON,
    Condition,
    FilterNode,
    field_kind,
    parse_filter,
    value_kind,
)
from cjkrag.errors import FilterError, missing

if TYPE_CHECKING:
    from qdrant_client import models as qm

_RANGE_KEY = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


def _models() -> Any:
    try:
        from qdrant_client import models
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise missing("qdrant", "qdrant-client") from exc
    return models


def payload_key(field: str) -> str:
    """The payload key of a validated field (``metadata.a.b`` is Qdrant's nested-key syntax already)."""
    return field


class _Translator:
    def __init__(self, m: Any) -> None:
        self.m = m

    def node(self, node: FilterNode) -> Any:
        m = self.m
        if isinstance(node, Condition):
            return self.condition(node)
        children = [self.node(c) for c in node.conditions]
        if node.operator == "AND":
            return m.Filter(must=children)
        if node.operator == "OR":
            return m.Filter(should=children)
        return m.Filter(must_not=children)

    def equal(self, key: str, value: Any, exact_numbers: bool) -> Any:
        m = self.m
        if value_kind(value) == "number" and not exact_numbers:
            return m.FieldCondition(key=key, range=m.Range(gte=value, lte=value))
        return m.FieldCondition(key=key, match=m.MatchValue(value=value))

    def any_of(self, key: str, values: tuple[Any, ...], exact_numbers: bool) -> Any:
        m = self.m
        kind = value_kind(values[0])
        if kind == "str" or (kind == "number" and exact_numbers):
            return m.FieldCondition(key=key, match=m.MatchAny(any=list(values)))
        unique = list(dict.fromkeys(values))
        if len(unique) == 1:
            return self.equal(key, unique[0], exact_numbers)
        return m.Filter(should=[self.equal(key, v, exact_numbers) for v in unique])

    def condition(self, c: Condition) -> Any:
        m = self.m
        key, op, value = payload_key(c.field), c.operator, c.value
        exact_numbers = field_kind(c.field) == "int"  # start/end/chunk_index hold ints only
        if op == "==":
            return self.equal(key, value, exact_numbers)
        if op == "!=":
            return m.Filter(must_not=[self.equal(key, value, exact_numbers)])
        if op in ("in", "contains_any"):
            return self.any_of(key, value, exact_numbers)
        if op == "not in":
            return m.Filter(must_not=[self.any_of(key, value, exact_numbers)])
        if op in COMPARISON:
            if value_kind(value) != "number":
                raise FilterError(
                    f"filter on {c.field!r}: Qdrant cannot compare strings with {op!r} (its ranges are numeric): "
                    "use '==' / 'in', store the value as a number, or use the Milvus or Elasticsearch backend"
                )
            return m.FieldCondition(key=key, range=m.Range(**{_RANGE_KEY[op]: value}))
        empty = m.IsEmptyCondition(is_empty=m.PayloadField(key=key))  # exists
        return m.Filter(must_not=[empty]) if value else empty


def translate(node: FilterNode | None) -> qm.Filter | None:
    """A Qdrant ``Filter`` for a filter-language node (validated here), or None for no filter."""
    checked = parse_filter(node, limits=False)
    if checked is None:
        return None
    m = _models()
    result = _Translator(m).node(checked)
    if isinstance(result, m.Filter):
        return result
    return m.Filter(must=[result])
