"""The one protocol every vector-store adapter implements (Milvus, Qdrant, Weaviate, Elasticsearch).

Conventions every adapter honours (the conformance tests check them):
- ``filters`` is a validated filter-language node (``connectors.filters``); the adapter translates it with
  its own ``filters.py`` and pushes it *into* the backend query (pre-filter), never post-filters.
- Scores are "higher is better": cosine similarity for dense search, BM25 (positive) for keyword search.
- ``upsert`` is idempotent by ``chunk_id``; nothing stored is lost if a batch fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.types import ChunkRecord, StoredHit


@runtime_checkable
class VectorStore(Protocol):
    """A collection of chunks with a dense vector and analyzed keywords each."""

    def warm_up(self) -> None:
        """Connect (and import the client library). Raises StoreUnavailable with the URI and a fix."""

    def ensure_collection(self, dim: int) -> None:
        """Create the collection (schema, indexes) if missing; check the dimension if it exists."""

    def drop_collection(self) -> None:
        """Remove the collection and everything in it."""

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        """Insert or replace chunks by ``chunk_id``."""

    def delete(self, ids: Sequence[str] | None = None, filters: FilterNode | None = None) -> None:
        """Delete chunks by id, or all chunks matching ``filters``."""

    def search_dense(
        self, vector: Sequence[float], top_k: int, filters: FilterNode | None
    ) -> list[StoredHit]:
        """Nearest chunks by cosine similarity among those matching ``filters``."""

    def search_keyword(self, terms: Sequence[str], top_k: int, filters: FilterNode | None) -> list[StoredHit]:
        """Best chunks by BM25 over the analyzed ``keywords`` among those matching ``filters``."""

    def query(
        self, filters: FilterNode | None, fields: Sequence[str], limit: int = 16384
    ) -> list[dict[str, object]]:
        """Stored fields of the chunks matching ``filters`` (no ranking).

        ``"vector"`` among ``fields`` returns the stored dense vector (a list of floats), or raises
        StoreError where the backend cannot: ingestion then re-embeds instead of reusing vectors for an
        access-only change.
        """

    def count(self, filters: FilterNode | None = None) -> int:
        """Number of chunks matching ``filters``."""

    def close(self) -> None:
        """Release connections/files."""
