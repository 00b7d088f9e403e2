"""A vector store paired with a keyword store (``store.keyword_backend``): dense here, BM25 there.

Production CJK stacks often pair Milvus or Qdrant with an Elasticsearch they already run. Writes and deletes
go to both; any failure is raised (naming the side that failed), never kept half-silently: the ingestion job
then counts the document as failed and retries it on the next run (upserts are idempotent by chunk id, so
the retry converges both sides). Reads: dense search from the vector side, keyword search from the keyword
side, ``query``/``count`` from the vector side (the one both are written to first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cjkrag.errors import StoreError

if TYPE_CHECKING:
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.connectors.protocol import VectorStore
    from cjkrag.types import ChunkRecord, StoredHit


class PairedStore:
    def __init__(self, vector: VectorStore, keyword: VectorStore) -> None:
        self.vector, self.keyword = vector, keyword

    def _both(self, what: str, vector_call: object, keyword_call: object) -> None:
        errors: list[str] = []
        for side, call in (("vector store", vector_call), ("keyword store", keyword_call)):
            try:
                call()  # type: ignore[operator]
            except Exception as exc:
                errors.append(f"{side}: {exc}")
        if errors:
            raise StoreError(
                f"{what} failed on {' and '.join(e.split(':', 1)[0] for e in errors)} ({'; '.join(errors)}); "
                "the two stores may differ until the operation is retried (re-run the ingestion)"
            )

    def warm_up(self) -> None:
        self.vector.warm_up()
        self.keyword.warm_up()

    def ensure_collection(self, dim: int) -> None:
        self.vector.ensure_collection(dim)
        self.keyword.ensure_collection(dim)

    def drop_collection(self) -> None:
        self._both("drop_collection", self.vector.drop_collection, self.keyword.drop_collection)

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        self._both("upsert", lambda: self.vector.upsert(records), lambda: self.keyword.upsert(records))

    def delete(self, ids: Sequence[str] | None = None, filters: FilterNode | None = None) -> None:
        self._both(
            "delete", lambda: self.vector.delete(ids, filters), lambda: self.keyword.delete(ids, filters)
        )

    def search_dense(
        self, vector: Sequence[float], top_k: int, filters: FilterNode | None
    ) -> list[StoredHit]:
        return self.vector.search_dense(vector, top_k, filters)

    def search_keyword(self, terms: Sequence[str], top_k: int, filters: FilterNode | None) -> list[StoredHit]:
        return self.keyword.search_keyword(terms, top_k, filters)

    def query(
        self, filters: FilterNode | None, fields: Sequence[str], limit: int = 16384
    ) -> list[dict[str, object]]:
        return self.vector.query(filters, fields, limit)

    def count(self, filters: FilterNode | None = None) -> int:
        return self.vector.count(filters)

    def close(self) -> None:
        try:
            self.vector.close()
        finally:
            self.keyword.close()
