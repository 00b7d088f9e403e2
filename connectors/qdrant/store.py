"""Qdrant adapter (:class:`QdrantStore`): named dense vector + BM25 sparse vector, ACL pushed into the query.

Modes (``store.qdrant.mode``): ``edge`` (default; qdrant-edge-py, Qdrant's Rust engine in-process, one shard
folder per collection under ``<data_dir>/<path>/edge/``), ``local`` (qdrant-client's local mode under
``<data_dir>/<path>/local``, or ``path: ":memory:"``; brute-force Python, payload indexes ignored: tests and
small sets) and ``server`` (``url``, REST or gRPC with ``prefer_grpc``; API key from ``api_key_env``).

Each chunk is a point with id ``uuid5(chunk_id)`` (Qdrant ids are ints or UUIDs; the chunk id is in the
payload), a ``dense`` cosine vector, a ``bm25`` sparse vector (``connectors/qdrant/sparse.py``: hashed
analyzer terms, ``Modifier.IDF``) and the payload fields of ``ChunkRecord``. Payload indexes: ``acl``,
``deny``, ``doc_id``, ``tenant``, ``chunk_id`` (keyword), ``public`` (bool). Filters are translated by
``connectors/qdrant/filters.py`` and passed as the query's own filter (pre-filter). Scores: cosine
similarity and BM25, higher is better.

The collection records ``{schema, dim, distance, analyzer, sparse, bm25_avgdl}`` (server/local: collection
metadata; edge: ``cjkrag-collection.json`` in the shard folder); reopening with any other value is refused
with both values named.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cjkrag.connectors.checks import (
    check_delete,
    check_dim,
    check_query,
    check_terms,
    check_top_k,
    check_vector_dim,
)
from cjkrag.connectors.qdrant.engines import DENSE, SPARSE, ClientEngine, EdgeEngine, Point
from cjkrag.connectors.qdrant.filters import translate
from cjkrag.connectors.qdrant.sparse import SPARSE_SCHEME, document_vector, query_vector
from cjkrag.errors import ConfigError, StoreError, StoreUnavailable, missing

if TYPE_CHECKING:
    from cjkrag.config import Config
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.types import ChunkRecord, StoredHit

log = logging.getLogger("cjkrag.qdrant")

SCHEMA_VERSION = 1
BATCH_POINTS = 256
PAGE_POINTS = 1024
MAX_TOP_K = 16384
RETRIES = 4
BACKOFF_S = 0.25
CONNECT_TIMEOUT_S = 5
_NAMESPACE = uuid.UUID("6f1c1c7e-3f57-4f0e-9b7c-2d1c0c4a9e11")
PAYLOAD_FIELDS = (
    "chunk_id", "doc_id", "text", "title", "start", "end", "chunk_index", "acl", "deny", "public",
    "tenant", "language", "metadata", "doc_hash",
)  # fmt: skip
INDEXES = {"acl": "keyword", "deny": "keyword", "doc_id": "keyword", "tenant": "keyword",
           "chunk_id": "keyword", "public": "bool"}  # fmt: skip
T = TypeVar("T")


def point_id(chunk_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, chunk_id))


def _transient(exc: BaseException) -> bool:
    """Worth retrying: connection trouble, timeouts, 429/502/503/504, gRPC UNAVAILABLE/DEADLINE_EXCEEDED."""
    status = getattr(exc, "status_code", None)
    if status in (429, 502, 503, 504):
        return True
    name = type(exc).__name__
    if name in (
        "ResponseHandlingException",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "TimeoutException",
    ):
        return True
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            return str(code()).rsplit(".", 1)[-1] in (
                "UNAVAILABLE",
                "DEADLINE_EXCEEDED",
                "RESOURCE_EXHAUSTED",
            )
        except Exception:
            return False
    return False


class QdrantStore:
    """A cjkrag collection in Qdrant. Light to build; connects (or opens the shard) in :meth:`warm_up`."""

    def __init__(
        self,
        collection: str,
        *,
        mode: str = "edge",
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        prefer_grpc: bool = False,
        analyzer: str = "",
        bm25_avgdl: float | str = "auto",
    ) -> None:
        if mode not in ("edge", "local", "server"):
            raise ConfigError(f"store.qdrant.mode {mode!r}: choose edge, local or server")
        if mode == "server" and not url:
            raise ConfigError("store.qdrant.url is empty: give http(s)://host:6333 for mode: server")
        if mode != "server" and path is None:
            raise ConfigError(f"store.qdrant.path is empty: give a folder for mode: {mode}")
        self.collection, self.mode, self.url = collection, mode, url
        self.path = str(path) if path is not None else None
        self.uri = url if mode == "server" else f"qdrant-{mode}:{self.path}"
        self._api_key, self._prefer_grpc = api_key, prefer_grpc
        if bm25_avgdl != "auto" and not (isinstance(bm25_avgdl, int | float) and bm25_avgdl > 0):
            raise ConfigError(f"store.qdrant.bm25_avgdl {bm25_avgdl!r}: a positive number of tokens, or auto")
        self.analyzer, self._avgdl_auto = analyzer, bm25_avgdl == "auto"
        #: None until known: "auto" takes the collection's recorded value, or the first batch written fixes it
        self.bm25_avgdl: float | None = None if self._avgdl_auto else float(bm25_avgdl)
        self._avgdl_recorded = False  # set once the collection's record holds the value in use
        self._engine: ClientEngine | EdgeEngine | None = None
        self._lock = threading.RLock()
        self._dim: int | None = None

    # -- connection -------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        with self._lock:
            if self._engine is None:
                self._engine = self._open()

    def _open(self) -> ClientEngine | EdgeEngine:
        if self.mode == "edge":
            try:
                import qdrant_edge  # noqa: F401
            except ImportError as exc:
                raise missing("qdrant", "qdrant-edge-py") from exc
            root = Path(str(self.path)).expanduser() / "edge"
            root.mkdir(parents=True, exist_ok=True)
            try:
                return EdgeEngine(root, self.collection)
            except Exception as exc:
                raise StoreUnavailable(
                    f"cannot open Qdrant edge shard {root / self.collection}: {exc}"
                ) from exc
        try:
            from qdrant_client import QdrantClient
        except ImportError as exc:
            raise missing("qdrant", "qdrant-client") from exc
        try:
            if self.mode == "local":
                where = (
                    self.path if self.path == ":memory:" else str(Path(str(self.path)).expanduser() / "local")
                )
                client = (
                    QdrantClient(location=":memory:") if where == ":memory:" else QdrantClient(path=where)
                )
            else:
                client = QdrantClient(
                    url=self.url,
                    api_key=self._api_key,
                    prefer_grpc=self._prefer_grpc,
                    check_compatibility=False,  # get_collections() below checks the server itself
                    timeout=CONNECT_TIMEOUT_S,
                )
                client.get_collections()  # fail now, within seconds, when the server is not there
        except Exception as exc:
            raise StoreUnavailable(
                f"cannot connect to Qdrant at {self.uri!r} within {CONNECT_TIMEOUT_S} s: {type(exc).__name__}: "
                f"{exc}; start Qdrant (`docker compose up qdrant`) or fix store.qdrant.url / mode"
            ) from exc
        return ClientEngine(client, self.collection, local=self.mode == "local")

    def _e(self) -> ClientEngine | EdgeEngine:
        if self._engine is None:
            self.warm_up()
        assert self._engine is not None
        return self._engine

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one engine call; retry transient errors (server mode) with exponential backoff and jitter."""
        for attempt in range(RETRIES + 1):
            try:
                return fn()
            except StoreError:
                raise
            except Exception as exc:
                if not _transient(exc):
                    raise StoreError(
                        f"Qdrant {what} on collection {self.collection!r} failed: {exc}"
                    ) from exc
                if attempt == RETRIES:
                    raise StoreUnavailable(
                        f"Qdrant at {self.uri!r} failed during {what} after {RETRIES + 1} tries: {exc}"
                    ) from exc
                delay = BACKOFF_S * 2**attempt * (1 + random.random() / 2)
                log.warning("Qdrant %s: %s; retrying in %.2f s", what, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                engine, self._engine = self._engine, None
                self._dim = None
                engine.close()

    # -- collection ----------------------------------------------------------------------------------------
    def settings(self, dim: int) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "dim": dim,
            "distance": "cosine",
            "analyzer": self.analyzer,
            "sparse": SPARSE_SCHEME,
            "bm25_avgdl": self.bm25_avgdl,
        }

    def _problems(self, stored: dict[str, Any], dim: int | None) -> list[str]:
        recorded = stored.get("bm25_avgdl")
        if recorded is not None and (self._avgdl_auto or self.bm25_avgdl is None):
            self.bm25_avgdl = float(recorded)  # auto: the collection's own, fixed when it was first written
        want = self.settings(dim if dim is not None else int(stored.get("dim", -1)))
        self._avgdl_recorded = recorded is not None
        if recorded is None:
            want.pop("bm25_avgdl")  # nothing written yet: the first batch (or the configured value) fixes it
        labels = {"schema": "schema version", "dim": "vector dimension", "analyzer": "analyzer version",
                  "sparse": "keyword vector scheme", "bm25_avgdl": "BM25 average length"}  # fmt: skip
        return [
            f"{labels.get(key, key)} is {stored.get(key)!r} in the collection but {value!r} here"
            for key, value in want.items()
            if stored.get(key) != value
        ]

    def _incompatible(self, problems: list[str]) -> StoreError:
        return StoreError(
            f"Qdrant collection {self.collection!r} at {self.uri!r} is incompatible: {'; '.join(problems)}. "
            "Fix: set another `collection` name in the config and re-ingest, or restore the settings it was "
            "built with"
        )

    def _ready_dim(self) -> int | None:
        if self._dim is not None:
            return self._dim
        e = self._e()
        if not self._call("collection_exists", e.exists):
            return None
        stored = self._call("get_collection", e.meta)
        problems = self._problems(stored, None)
        if problems:
            raise self._incompatible(problems)
        self._dim = int(stored["dim"])
        return self._dim

    def ensure_collection(self, dim: int) -> None:
        check_dim(dim)
        with self._lock:
            e = self._e()
            if self._call("collection_exists", e.exists):
                problems = self._problems(self._call("get_collection", e.meta), dim)
                if problems:
                    raise self._incompatible(problems)
            else:
                self._call("create_collection", lambda: e.create(dim, self.settings(dim), INDEXES))
            self._dim = dim

    def drop_collection(self) -> None:
        with self._lock:
            e = self._e()
            if self._call("collection_exists", e.exists):
                self._call("delete_collection", e.drop)
            self._dim = None
            self._avgdl_recorded = False
            if self._avgdl_auto:
                self.bm25_avgdl = None

    # -- writes ------------------------------------------------------------------------------------------------
    def _point(self, r: ChunkRecord, dim: int) -> Point:
        vector = [float(x) for x in r.vector]
        if len(vector) != dim:
            raise StoreError(
                f"chunk {r.chunk_id!r} has a {len(vector)}-dimension vector, collection {self.collection!r} has "
                f"{dim}: embed with the model the collection was built with"
            )
        payload = {
            "chunk_id": r.chunk_id, "doc_id": r.doc_id, "text": r.text, "title": r.title, "start": r.start,
            "end": r.end, "chunk_index": r.chunk_index, "acl": list(r.acl), "deny": list(r.deny),
            "public": bool(r.public), "tenant": r.tenant, "language": r.language,
            "metadata": dict(r.metadata), "doc_hash": r.doc_hash,
        }  # fmt: skip
        assert self.bm25_avgdl is not None  # fixed by upsert() before any point is built
        return point_id(r.chunk_id), vector, document_vector(r.keywords, self.bm25_avgdl), payload

    def _fix_avgdl(self, records: Sequence[ChunkRecord]) -> None:
        """bm25_avgdl: auto on a collection never written: the first batch's mean keyword count, recorded."""
        with self._lock:
            e = self._e()
            meta = self._call("get_collection", e.meta)
            if meta.get("bm25_avgdl") is None:
                lengths = [len(r.keywords) for r in records]
                meta["bm25_avgdl"] = self.bm25_avgdl or max(1.0, round(sum(lengths) / len(lengths), 1))
                self._call("update_collection", lambda: e.update_meta(meta))
                log.info("Qdrant collection %r: BM25 average length fixed at %s analyzer tokens (first %d chunks)",
                         self.collection, meta["bm25_avgdl"], len(lengths))
            self.bm25_avgdl, self._avgdl_recorded = float(meta["bm25_avgdl"]), True

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        dim = self._ready_dim()
        if dim is None:
            raise StoreError(
                f"Qdrant collection {self.collection!r} does not exist at {self.uri!r}: "
                "call ensure_collection(dim) first (ingestion does)"
            )
        if not self._avgdl_recorded:
            self._fix_avgdl(records)
        by_id = {r.chunk_id: self._point(r, dim) for r in records}  # validate all first; last one wins
        points = list(by_id.values())
        e = self._e()
        for start in range(0, len(points), BATCH_POINTS):
            batch = points[start : start + BATCH_POINTS]
            self._call("upsert", lambda b=batch: e.upsert(b))  # type: ignore[misc]

    def delete(self, ids: Sequence[str] | None = None, filters: FilterNode | None = None) -> None:
        check_delete(ids, filters)
        if self._ready_dim() is None:
            return
        e = self._e()
        flt = translate(filters) if filters is not None else None
        if ids is None:
            self._call("delete", lambda: e.delete_filter(flt))
            return
        from qdrant_client import models as m

        id_list = [str(i) for i in ids]
        for start in range(0, len(id_list), 1000):
            part = id_list[start : start + 1000]
            if flt is None:
                self._call("delete", lambda p=part: e.delete_ids([point_id(c) for c in p]))  # type: ignore[misc]
            else:
                both = m.Filter(must=[m.FieldCondition(key="chunk_id", match=m.MatchAny(any=part)), flt])
                self._call("delete", lambda f=both: e.delete_filter(f))  # type: ignore[misc]

    # -- reads ---------------------------------------------------------------------------------------------------
    def _hits(self, rows: list[tuple[float, dict[str, Any]]]) -> list[StoredHit]:
        from cjkrag.types import StoredHit

        return [StoredHit(chunk_id=str(p["chunk_id"]), score=s, fields=p) for s, p in rows]

    def search_dense(
        self, vector: Sequence[float], top_k: int, filters: FilterNode | None
    ) -> list[StoredHit]:
        check_top_k(top_k, MAX_TOP_K)
        flt = translate(filters)
        dim = self._ready_dim()
        if dim is None:
            return []
        query = [float(x) for x in vector]
        check_vector_dim(len(query), dim, f"collection {self.collection!r}")
        e = self._e()
        return self._hits(
            self._call("search", lambda: e.search(query, DENSE, top_k, flt, list(PAYLOAD_FIELDS)))
        )

    def search_keyword(self, terms: Sequence[str], top_k: int, filters: FilterNode | None) -> list[StoredHit]:
        check_top_k(top_k, MAX_TOP_K)
        tokens = check_terms(terms)
        flt = translate(filters)
        indices, values = query_vector(tokens)
        if not indices or self._ready_dim() is None:
            return []
        e = self._e()
        rows = self._call(
            "search", lambda: e.search((indices, values), SPARSE, top_k, flt, list(PAYLOAD_FIELDS))
        )
        return self._hits([(s, p) for s, p in rows if s > 0])

    def query(
        self, filters: FilterNode | None, fields: Sequence[str], limit: int = 16384
    ) -> list[dict[str, object]]:
        output = check_query(fields, PAYLOAD_FIELDS, limit)
        flt = translate(filters)
        if self._ready_dim() is None:
            return []
        e = self._e()
        rows: list[dict[str, object]] = []
        offset: Any = None
        while len(rows) < limit:  # scroll pages by point id: no 16k window
            size = min(PAGE_POINTS, limit - len(rows))
            page, offset = self._call("scroll", lambda o=offset, n=size: e.scroll(flt, output, n, o))  # type: ignore[misc]
            rows.extend({name: p.get(name) for name in output} for p in page)
            if offset is None or not page:
                break
        return rows

    def count(self, filters: FilterNode | None = None) -> int:
        flt = translate(filters)
        if self._ready_dim() is None:
            return 0
        e = self._e()
        return self._call("count", lambda: e.count(flt))


def from_config(config: Config) -> QdrantStore:
    """``store.backend: qdrant`` (see ``connectors.registry``)."""
    from cjkrag.connectors.registry import secret_from_env

    q = config.store.qdrant
    path: str | Path | None = None
    if q.mode != "server":
        path = q.path if q.path == ":memory:" else config.data_path(q.path)
    return QdrantStore(
        config.collection,
        mode=q.mode,
        path=path,
        url=q.url,
        api_key=secret_from_env(q.api_key_env, "store.qdrant.api_key_env") if q.mode == "server" else None,
        prefer_grpc=q.prefer_grpc,
        analyzer=config.analyzer_tag(),
        bm25_avgdl=q.bm25_avgdl,
    )
