"""Filter language -> a Weaviate v4 ``Filter`` (see ``connectors/FILTERS.md``, section Weaviate).

Weaviate has no free-form JSON properties and cannot filter inside object properties, so the store keeps
each metadata key as its own flat property: ``metadata.category`` -> ``meta_category``, nested keys joined
by ``__`` (``metadata.a.b`` -> ``meta_a__b``). To keep that mapping one-to-one, a metadata key used with
Weaviate may not start or end with ``_`` nor contain ``__`` (FilterError otherwise). :func:`property_name`
is the one mapping; the store must use it when writing objects.

- ``==``: ``equal``; ``>``...: ``greater_than``...; ``contains_any``: ``contains_any``; ``in``: ``any_of``
  of ``equal``; ``exists``: ``is_none(False)`` (has a value), ``exists: false`` its ``not_`` (needs
  ``indexNullState``; the complement also covers objects written before a metadata property existed, which
  Weaviate's null index never saw).
- ``!=`` / ``not in`` / NOT: ``Filter.not_`` (complement: a missing property matches, as in the reference;
  needs a Weaviate server with the ``Not`` operator). AND: ``all_of``; OR: ``any_of``.
- Metadata numbers are sent as floats (the store declares metadata numbers as ``number``); the int fields
  ``start``/``end``/``chunk_index`` as ints.
"""

from __future__ import annotations

import re
from typing import Any

from cjkrag.connectors.filters import (
    Condition,
    FilterNode,
    field_kind,
    metadata_path,
    parse_filter,
    value_kind,
)
from cjkrag.errors import FilterError, missing

METADATA_PREFIX = "meta_"
_SEGMENT = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")
_COMPARE = {">": "greater_than", ">=": "greater_or_equal", "<": "less_than", "<=": "less_or_equal"}


def property_name(field: str) -> str:
    """The Weaviate property of a validated field: ``title`` or ``meta_a__b`` for ``metadata.a.b``."""
    path = metadata_path(field)
    if path is None:
        return field
    for key in path:
        if not _SEGMENT.fullmatch(key):
            raise FilterError(
                f"metadata key {key!r} in {field!r} cannot be a Weaviate property: with Weaviate, metadata keys "
                "may not start or end with '_' nor contain '__' (nested keys are joined with '__'): rename it"
            )
    return METADATA_PREFIX + "__".join(path)


def _filter_class() -> Any:
    try:
        from weaviate.classes.query import Filter
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise missing("weaviate", "weaviate-client") from exc
    return Filter


class _Translator:
    def __init__(self, f: Any) -> None:
        self.F = f

    def node(self, node: FilterNode) -> Any:
        if isinstance(node, Condition):
            return self.condition(node)
        children = [self.node(c) for c in node.conditions]
        if node.operator == "AND":
            return self.F.all_of(children)
        if node.operator == "OR":
            return self.F.any_of(children)
        return self.F.not_(self.F.any_of(children))

    def condition(self, c: Condition) -> Any:
        f = self.F
        prop = f.by_property(property_name(c.field))
        op, value = c.operator, self.wire(c.field, c.value)
        if op == "==":
            return prop.equal(value)
        if op == "!=":
            return f.not_(prop.equal(value))
        if op in ("in", "not in"):
            unique = list(dict.fromkeys(value))
            any_of = f.any_of([f.by_property(property_name(c.field)).equal(v) for v in unique])
            return any_of if op == "in" else f.not_(any_of)
        if op == "contains_any":
            return prop.contains_any(list(value))
        if op == "exists":
            has_value = prop.is_none(False)
            return has_value if value else f.not_(has_value)
        return getattr(prop, _COMPARE[op])(value)

    @staticmethod
    def wire(field: str, value: Any) -> Any:
        """Metadata numbers as floats (one Weaviate ``number`` type); everything else as is."""
        if field_kind(field) != "any":
            return value
        if isinstance(value, tuple):
            return tuple(float(v) if value_kind(v) == "number" else v for v in value)
        return float(value) if value_kind(value) == "number" else value


def translate(node: FilterNode | None) -> Any:
    """A Weaviate ``Filter`` (``weaviate.classes.query.Filter`` combinators) for a node, or None."""
    checked = parse_filter(node, limits=False)
    if checked is None:
        return None
    return _Translator(_filter_class()).node(checked)
