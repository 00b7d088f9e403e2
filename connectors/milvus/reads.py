"""The row reads of :class:`~cjkrag.connectors.milvus.store.MilvusStore` (moved out of ``store.py``): ``query``
with paging past Milvus' 16384-row window, ``count``, and ``fetch`` (the late fetch of a search's hits).

A mixin: it needs the store's connection (``_c``, ``_call``), its filter translation (``_expr``) and
``_ready_dim``; everything here is a read, nothing writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from cjkrag.connectors.milvus.filters import literal
from cjkrag.connectors.milvus.lite import is_lite_uri
from cjkrag.connectors.milvus.schema import MAX_TOP_K, OUTPUT_FIELDS, QUERYABLE_FIELDS, plain_value
from cjkrag.errors import StoreError

if TYPE_CHECKING:
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.connectors.milvus.store import PreparedExpr

PAGE_ROWS = 4096
_EMPTY_QUERY_QUIRK = "Unsupported data type: 0"


class MilvusReads:
    uri: str
    collection: str
    consistency: str
    search_consistency: str

    def _c(self) -> Any:
        raise NotImplementedError

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _expr(self, filters: Any) -> str:
        raise NotImplementedError

    def _ready_dim(self) -> int | None:
        raise NotImplementedError

    def fetch(
        self,
        chunk_ids: Sequence[str],
        filters: FilterNode | PreparedExpr | None,
        fields: Sequence[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """The stored fields (default: all of ``OUTPUT_FIELDS``) of those of ``chunk_ids`` that still exist
        and match ``filters``, by chunk id: the late fetch after a search without fields. One query; the
        filter (access clause included) is applied again, inside Milvus."""
        output = self._output_fields(fields)
        ids = list(dict.fromkeys(str(i) for i in chunk_ids))
        if not ids:
            return {}
        if len(ids) > MAX_TOP_K:
            raise StoreError(f"fetch of {len(ids)} chunks is over Milvus' limit of {MAX_TOP_K}: fetch fewer")
        if self._ready_dim() is None:
            return {}
        expr = self._expr(filters)
        where = "chunk_id in " + literal(ids)
        client = self._c()
        try:
            rows = self._call(
                "fetch", client.query, self.collection, filter=f"({where}) and ({expr})" if expr else where,
                output_fields=["chunk_id", *output], limit=len(ids), consistency_level=self.search_consistency,
            )  # fmt: skip
        except StoreError as exc:  # Lite: a query matching nothing (all of them deleted since the search)
            if _EMPTY_QUERY_QUIRK in str(exc):
                return {}
            raise
        return {str(r["chunk_id"]): {name: plain_value(r.get(name)) for name in output} for r in rows}

    def _output_fields(self, fields: Sequence[str] | None) -> tuple[str, ...]:
        if fields is None:
            return OUTPUT_FIELDS
        unknown = [f for f in fields if f not in OUTPUT_FIELDS]
        if unknown:
            raise StoreError(
                f"fields {unknown} are not search output fields; choose from {list(OUTPUT_FIELDS)}"
            )
        return tuple(dict.fromkeys(fields))

    def query(
        self, filters: FilterNode | None, fields: Sequence[str], limit: int = 16384
    ) -> list[dict[str, object]]:
        return self._query_expr(self._expr(filters), fields, limit)

    def _query_expr(self, expr: str, fields: Sequence[str], limit: int) -> list[dict[str, object]]:
        unknown = [f for f in fields if f not in QUERYABLE_FIELDS]
        if unknown:
            raise StoreError(
                f"query fields {unknown} are not stored in Milvus collection {self.collection!r}; "
                f"choose from {sorted(QUERYABLE_FIELDS)}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise StoreError(f"query limit must be a positive int, got {limit!r}")
        if self._ready_dim() is None:
            return []
        output = ["chunk_id", *[f for f in fields if f != "chunk_id"]]
        if is_lite_uri(self.uri):
            # Milvus Lite 2.5.1 fails a query that matches nothing with "Unsupported data type: 0" (and
            # pymilvus logs it as an ERROR); count(*) does not. Counting first also saves the query then.
            total = self._count_expr(expr)
            if total == 0:
                return []
            limit = min(limit, total)
        try:
            rows = list(self._iter_rows(expr, output, limit))
        except StoreError as exc:  # the quirk again, if the rows were deleted since the count
            if _EMPTY_QUERY_QUIRK in str(exc) and self._count_expr(expr) == 0:
                return []
            raise
        return [{name: plain_value(row.get(name)) for name in output} for row in rows]

    def _iter_rows(self, expr: str, output: list[str], limit: int) -> Iterator[dict[str, Any]]:
        """Rows matching ``expr``; past Milvus' 16384-row window, pages ordered by primary key.

        pymilvus' ``query_iterator`` is not used: Milvus Lite 2.5.1 fails its last (empty) page, and it
        builds ``chunk_id > "..."`` without escaping. The same ``iterator``/``reduce_stop_for_best`` query
        flags it sends make each page the smallest primary keys past the previous page's last one.
        """
        client = self._c()
        if limit <= MAX_TOP_K:
            yield from self._call(
                "query",
                client.query,
                self.collection,
                filter=expr,
                output_fields=output,
                limit=limit,
                consistency_level=self.consistency,
            )
            return
        last: str | None = None
        left = limit
        while left > 0:
            page_expr = expr
            if last is not None:
                after = "chunk_id > " + literal(last)
                page_expr = f"({expr}) and {after}" if expr else after
            try:
                page = self._call(
                    "query page",
                    client.query,
                    self.collection,
                    filter=page_expr,
                    output_fields=output,
                    limit=min(PAGE_ROWS, left),
                    consistency_level=self.consistency,
                    iterator="True",
                    reduce_stop_for_best="True",
                )
            except StoreError as exc:
                if _EMPTY_QUERY_QUIRK in str(exc) and self._count_expr(page_expr) == 0:
                    return
                raise
            if not page:
                return
            yield from page
            left -= len(page)
            if len(page) < min(PAGE_ROWS, left + len(page)):
                return
            last = str(page[-1]["chunk_id"])

    def count(self, filters: FilterNode | None = None) -> int:
        return self._count_expr(self._expr(filters))

    def _count_expr(self, expr: str) -> int:
        if self._ready_dim() is None:
            return 0
        client = self._c()
        rows = self._call(
            "count",
            client.query,
            self.collection,
            filter=expr,
            output_fields=["count(*)"],
            consistency_level=self.consistency,
        )
        return int(rows[0]["count(*)"]) if rows else 0
