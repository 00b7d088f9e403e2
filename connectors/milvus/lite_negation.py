"""Milvus Lite has no ``not (...)``: the Lite expression of a filter with every NOT it cannot write resolved
to chunk ids (moved out of ``store.py`` unchanged; :class:`~cjkrag.connectors.milvus.store.MilvusStore`
calls :func:`lite_expr` with its id lookup and its limits).

The translator (``filters.py``) pushes NOT down to complementary conditions (``!=``, ``not in``,
``deny[i] not in P`` over the array capacity); what has no complement is looked up here and excluded as
``chunk_id not in [...]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cjkrag.connectors.filters import Condition, Logical, and_, field_kind, to_dict
from cjkrag.connectors.milvus.filters import literal, render, translate
from cjkrag.connectors.milvus.schema import ARRAY_CAPACITY
from cjkrag.errors import FilterError

if TYPE_CHECKING:
    from cjkrag.connectors.filters import FilterNode


def lite_expr(
    node: FilterNode,
    matching_ids: Callable[[str, int], list[str] | None],
    *,
    max_resolved_ids: int,
    max_not_resolutions: int,
    max_filter_resolved_ids: int,
    max_expansion_chars: int,
) -> str:
    """Milvus Lite expression of ``node``, with every NOT that Lite cannot write resolved to chunk ids.

    Two kinds of resolution, at most max_not_resolutions distinct conditions per filter (FilterError):

    - NOT ``acl``/``deny`` ``contains_any`` P (the access clause's deny): the ids of the chunks that
      name P, over the whole collection; past max_resolved_ids, the exact ``deny[i] not in P``
      expansion instead (slower, never wrong, never an error unless over max_expansion_chars).
    - NOT of a metadata comparison (user filters): the ids are looked up only among the chunks that
      the filter's other top-level AND parts allow (the access clause is always one of them), i.e.
      within what the caller may read. Invisible chunks never count, so neither the cost nor the
      answer depends on data the caller cannot read; over max_filter_resolved_ids (all resolutions of
      the filter together) is a FilterError naming the condition.
    """
    conjuncts: tuple[FilterNode, ...] = (
        node.conditions if isinstance(node, Logical) and node.operator == "AND" else (node,)
    )
    needs = [_needs(part) for part in conjuncts]
    distinct = list(dict.fromkeys(c for part in needs for c in part))
    if len(distinct) > max_not_resolutions:
        raise FilterError(
            f"filter: {len(distinct)} negated conditions that Milvus Lite must resolve one by one (NOT of a "
            f"metadata comparison or of acl/deny contains_any), over the limit of {max_not_resolutions}: "
            "use 'not in' with a list, '!=' or '==' instead, or a Milvus server"
        )
    arrays = [c for c in distinct if field_kind(c.field) == "list"]
    resolved: dict[Condition, list[str]] = {}
    expand = False
    for c in arrays:
        ids = matching_ids(render(*translate(c, lite=True)), max_resolved_ids)
        if ids is None:
            expand = True
            break
        resolved[c] = ids
    if expand:
        resolved = {}
        for c in arrays:
            size = len(literal(list(c.value))) * ARRAY_CAPACITY
            if size > max_expansion_chars:
                raise FilterError(
                    f"filter: NOT {c.field} contains_any a list of {len(c.value)} principals over more than "
                    f"{max_resolved_ids} chunks is too large for Milvus Lite to express: give fewer values"
                )
    scope_parts = [part for part, n in zip(conjuncts, needs, strict=True) if all(c in arrays for c in n)]
    scope = _render(and_(*scope_parts), resolved, expand) if scope_parts else ""
    budget = max_filter_resolved_ids
    for c in distinct:
        if c in arrays:
            continue
        # no resolve= here: what Lite cannot express even positively (metadata exists) is a FilterError
        positive = render(*translate(c, lite=True, array_capacity=ARRAY_CAPACITY))
        ids = matching_ids(f"({scope}) and ({positive})" if scope else positive, budget)
        if ids is None:
            raise FilterError(
                f"filter: the negated condition {to_dict(c)} matches more of the chunks you may read than "
                f"Milvus Lite can exclude by id ({max_filter_resolved_ids} per filter): narrow the filter, "
                "write the negation as '!=' / 'not in', or use a Milvus server"
            )
        budget -= len(ids)
        resolved[c] = ids
    return _render(node, resolved, expand)


def _needs(node: FilterNode) -> list[Condition]:
    """The conditions the Lite translation of ``node`` would resolve by id (a dry run, no query)."""
    seen: dict[Condition, None] = {}

    def record(c: FilterNode) -> list[str]:
        assert isinstance(c, Condition)
        seen[c] = None
        return []

    translate(node, lite=True, resolve=record, expand_arrays=False, array_capacity=ARRAY_CAPACITY)
    return list(seen)


def _render(node: FilterNode | None, resolved: dict[Condition, list[str]], expand: bool) -> str:
    def lookup(c: FilterNode) -> list[str]:
        assert isinstance(c, Condition)
        return resolved[c]

    expr, params = translate(
        node, lite=True, resolve=lookup, expand_arrays=expand, array_capacity=ARRAY_CAPACITY
    )
    return render(expr, params)
