"""Filter language -> an Elasticsearch ``bool`` query (see ``connectors/FILTERS.md``, section Elasticsearch).

Field paths are the field names; metadata is the object field ``metadata`` (``metadata.category``). Values
only ever appear as JSON values in ``term`` / ``terms`` / ``range`` (never in a field name, a script or a
``query_string``), so no value is parsed by Elasticsearch as syntax.

- ``==``: ``term``; ``in`` / ``contains_any``: ``terms``; ``>``...: ``range``; ``exists``: ``exists``.
- ``!=`` / ``not in`` / NOT: ``bool.must_not`` (complement: a missing key matches, as in the reference).
- AND: ``bool.filter``; OR: ``bool.should`` with ``minimum_should_match: 1``.

Mapping the store must use (exact, typed matching): ``keyword`` for ``doc_id``, ``chunk_id``, ``title``,
``tenant``, ``language``, ``acl``, ``deny`` and for string metadata (a ``dynamic_templates`` entry mapping
``metadata.*`` strings to ``keyword``), ``long`` for ``start``/``end``/``chunk_index``, ``boolean`` for
``public``.
"""

from __future__ import annotations

from typing import Any

from cjkrag.connectors.filters import COMPARISON, Condition, FilterNode, parse_filter

_RANGE_KEY = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


def field_path(field: str) -> str:
    """The Elasticsearch field of a validated filter field (``metadata.a.b`` is already a dotted path)."""
    return field


def _not(query: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"must_not": [query]}}


def _condition(c: Condition) -> dict[str, Any]:
    path, op, value = field_path(c.field), c.operator, c.value
    if op == "==":
        return {"term": {path: value}}
    if op == "!=":
        return _not({"term": {path: value}})
    if op in ("in", "contains_any"):
        return {"terms": {path: list(value)}}
    if op == "not in":
        return _not({"terms": {path: list(value)}})
    if op in COMPARISON:
        return {"range": {path: {_RANGE_KEY[op]: value}}}
    exists = {"exists": {"field": path}}
    return exists if value else _not(exists)


def _node(node: FilterNode) -> dict[str, Any]:
    if isinstance(node, Condition):
        return _condition(node)
    children = [_node(c) for c in node.conditions]
    if node.operator == "AND":
        return {"bool": {"filter": children}}
    if node.operator == "OR":
        return {"bool": {"should": children, "minimum_should_match": 1}}
    return {"bool": {"must_not": children}}


def translate(node: FilterNode | None) -> dict[str, Any] | None:
    """A ``bool`` query for a filter-language node (validated here); None for no filter.

    Use it as a filter clause: ``{"query": {"bool": {"filter": [q]}}}`` or kNN's ``"filter": q``.
    """
    checked = parse_filter(node, limits=False)
    if checked is None:
        return None
    query = _node(checked)
    return query if "bool" in query else {"bool": {"filter": [query]}}
