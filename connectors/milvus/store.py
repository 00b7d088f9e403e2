"""Milvus adapter (:class:`MilvusStore`): dense + BM25 keyword search with the ACL/filter pushed into Milvus.

Engines: a server URI (``http://host:19530``) or a Milvus Lite file (``./cjkrag-data/milvus.db``; the
pinned ``milvus-lite==2.5.1`` wheel is the real C++ engine, ~9 ms per filtered search at 50k rows).

Keyword search, what was chosen and why (verified on milvus-lite 2.5.1 + pymilvus 2.5.18):
BM25 runs inside Milvus. The analyzer's tokens (``ChunkRecord.keywords``) are stored joined by single
spaces in the VARCHAR field ``keywords`` with ``enable_analyzer=True`` and
``analyzer_params={"tokenizer": "whitespace"}`` (no lowercase/stop filters: our analyzer did that); a
``Function(type=BM25)`` fills the SPARSE_FLOAT_VECTOR ``sparse`` (``SPARSE_INVERTED_INDEX``, metric
``BM25``); a query is its tokens joined by spaces. Lite 2.5.1 supports all of it and the whitespace
tokenizer keeps CJK tokens whole (``首都`` is one term; ``东京`` does not match a chunk whose tokens are
``东`` and ``京``; the tests check both), so no term hashing or client-side BM25 was needed. Milvus returns
BM25 scores positive, higher is better: they are the score as is.

Filters: ``cjkrag.connectors.milvus.filters.translate`` (written with this adapter) gives ``(expr, params)``
and its ``render`` inlines the parameters as literals, on a server too: Lite 2.5.1 has no expression
templates (``filter_params``: ``{p0}`` is a parse error that pymilvus retries until its timeout). On Lite,
which has no ``not (...)``, the translator pushes NOT down to complementary conditions (``!=``, ``not in``,
``deny[i] not in P`` over the array capacity) and resolves (``lite_negation.py``) the chunk ids
of what has no complement (``chunk_id not in [...]``; refused past MAX_RESOLVED_IDS). The expression is
the search's own ``filter=`` (pre-filter): Milvus returns the best *matching* chunks, ``top_k`` visible
hits even when most of the best-scoring chunks are invisible.

Lite 2.5.1 quirks handled here: a ``query`` matching nothing fails with "Unsupported data type: 0" (so Lite
queries count first); scalar indexes on ARRAY fields are refused (INVERTED indexes are made
on the other filter fields, and on ``acl``/``deny`` only on a server); a partition-key field breaks filter
expressions (so there is none); a reopened collection is not loaded (reads load it); pymilvus'
``query_iterator`` fails on its last empty page (paging is done here, by primary key); and milvus-lite
imports ``pkg_resources`` (gone from recent setuptools), so a stand-in is provided while importing it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cjkrag.connectors.locking import acquire_store_lock, release_store_lock
from cjkrag.connectors.milvus import resolve_cache
from cjkrag.connectors.milvus.filters import literal, render, translate
from cjkrag.connectors.milvus.lite import (
    import_milvus_lite,
    is_lite_uri,
    lite_closed,
    lite_opened,
    lite_server_env,
)
from cjkrag.connectors.milvus.lite_negation import lite_expr
from cjkrag.connectors.milvus.reads import MilvusReads
from cjkrag.connectors.milvus.schema import (
    MAX_TOP_K,
    SCALAR_INDEXES,
    batches,
    build_schema,
    existing_dim,
    plain_value,
    record_to_row,
    recorded_settings,
    schema_problems,
    settings,
    settings_problems,
)
from cjkrag.errors import ConfigError, StoreError, StoreUnavailable, missing

if TYPE_CHECKING:
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.types import ChunkRecord, StoredHit

log = logging.getLogger("cjkrag.milvus")

CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 60.0
BATCH_ROWS = 512
BATCH_BYTES = 16 * 1024 * 1024
DELETE_IDS_PER_CALL = 1000
MAX_RESOLVED_IDS = 10000  # denied chunk ids inlined before falling back to the exact deny[i] expansion
MAX_NOT_RESOLUTIONS = 8  # distinct conditions one filter may need resolved to chunk ids (Lite)
MAX_FILTER_RESOLVED_IDS = 4096  # ids all the user-filter resolutions of one query may inline, together
MAX_EXPANSION_CHARS = 4 * 1024 * 1024  # a deny[i] not in P expansion larger than this is refused
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


@dataclass(frozen=True)
class PreparedExpr:
    """A filter already translated to a Milvus expression by ``store`` (see :meth:`MilvusStore.prepare_filter`)."""

    store: MilvusStore
    expr: str


class MilvusStore(MilvusReads):
    """A cjkrag collection in Milvus (server or Lite file). Light to build; connects in :meth:`warm_up`."""

    def __init__(
        self,
        uri: str,
        collection: str,
        *,
        token: str | None = None,
        db_name: str | None = None,
        consistency: str = "Strong",
        analyzer: str = "",
        search_consistency: str = "auto",
    ) -> None:
        if not uri:
            raise ConfigError(
                "store.milvus.uri is empty: give a Lite file path (./milvus.db) or http://host:19530"
            )
        if not _COLLECTION_NAME.match(collection or ""):
            raise ConfigError(
                f"collection name {collection!r} is not valid for Milvus: use letters, digits and '_', "
                "starting with a letter or '_', at most 255 characters"
            )
        self.uri = uri
        self.collection = collection
        self.token = token
        self.db_name = db_name
        self.consistency = consistency
        self.analyzer = analyzer  # recorded with the collection; a reopen with another one is refused
        #: consistency level of searches (see MilvusConfig.search_consistency); writes' re-reads stay Strong
        self.search_consistency = (
            search_consistency if search_consistency != "auto" else ("Strong" if is_lite_uri(uri) else "Bounded")
        )
        self._client: Any = None
        self._lock = threading.Lock()
        self._alias = f"cjkrag-{uuid.uuid4().hex[:12]}"
        self._lite_path: str | None = None
        self._dim: int | None = None  # known once the collection is seen to exist and is loaded

    # -- connection ---------------------------------------------------------------------------------
    def _fix_hint(self) -> str:
        if is_lite_uri(self.uri):
            return "check the path is writable and not opened by another process"
        return "start Milvus (e.g. `docker compose up milvus`) or fix store.milvus.uri / the token"

    def warm_up(self) -> None:
        """Import pymilvus (and milvus-lite for a file) and connect; raises StoreUnavailable within ~5 s."""
        with self._lock:
            if self._client is None:
                self._connect()

    def _connect(self) -> None:
        try:
            import pymilvus
        except ImportError as exc:
            raise missing("milvus", "pymilvus") from exc
        if is_lite_uri(self.uri):
            if not self.uri.endswith(".db"):
                raise StoreError(
                    f"Milvus Lite path {self.uri!r} must end with '.db' (or give a server URI http://host:19530)"
                )
            Path(self.uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            try:
                import_milvus_lite()
            except ImportError as exc:
                raise missing("milvus", "milvus-lite") from exc
        uri = str(Path(self.uri).expanduser().resolve()) if is_lite_uri(self.uri) else self.uri
        if is_lite_uri(self.uri):  # ours, before milvus-lite starts (see connectors/locking.py)
            acquire_store_lock(uri, f"Milvus Lite file {self.uri}")
        try:
            with lite_server_env() if is_lite_uri(self.uri) else contextlib.nullcontext():
                self._client = pymilvus.MilvusClient(
                    uri=uri,
                    token=self.token or "",
                    db_name=self.db_name or "",
                    timeout=CONNECT_TIMEOUT_S,
                    alias=self._alias,
                )
        except Exception as exc:
            if is_lite_uri(self.uri):
                release_store_lock(uri)
            raise StoreUnavailable(
                f"cannot connect to Milvus at {self.uri!r} (within {CONNECT_TIMEOUT_S:g} s): {exc}; "
                f"{self._fix_hint()}"
            ) from exc
        if is_lite_uri(self.uri):
            self._lite_path = uri
            lite_opened(uri)

    def _c(self) -> Any:
        if self._client is None:
            self.warm_up()
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call, turning engine errors into StoreError/StoreUnavailable naming the collection."""
        kwargs.setdefault("timeout", CALL_TIMEOUT_S)
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            name = type(exc).__name__
            if "grpc" in name.lower() or "unavailable" in str(exc).lower() or "connect" in str(exc).lower():
                raise StoreUnavailable(
                    f"Milvus at {self.uri!r} failed during {what} on collection {self.collection!r}: {exc}; "
                    f"{self._fix_hint()}"
                ) from exc
            raise StoreError(f"Milvus {what} on collection {self.collection!r} failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection; the last store open on a Lite file also stops its server (frees the file)."""
        if self._client is None:
            return
        try:
            self._client.close()
        finally:
            self._client = None
            self._dim = None
            path, self._lite_path = self._lite_path, None
            if path is not None:
                resolve_cache.forget(path)  # the file may change hands: nothing read from it stays valid
                lite_closed(path)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every write: the NOT resolutions read from this Lite file before it are stale after it
        (``resolve_cache.py``), and none read while it runs is kept."""
        path = self._lite_path
        if path is None:
            yield
            return
        resolve_cache.write_begin(path)
        try:
            yield
        finally:
            resolve_cache.write_end(path)

    # -- collection -----------------------------------------------------------------------------------
    def _describe(self) -> dict[str, Any] | None:
        client = self._c()
        if not self._call("has_collection", client.has_collection, self.collection):
            return None
        return dict(self._call("describe_collection", client.describe_collection, self.collection))

    def _load(self) -> None:
        client = self._c()
        state = self._call("get_load_state", client.get_load_state, self.collection)
        if "Loaded" not in str(state.get("state")):
            self._call("load_collection", client.load_collection, self.collection)

    def _ready_dim(self) -> int | None:
        """The collection's dimension after making sure it is loaded; None when it does not exist."""
        if self._dim is not None:
            return self._dim
        description = self._describe()
        if description is None:
            return None
        problems = schema_problems(description, None) + self._settings_problems(description)
        if problems:
            raise self._incompatible(problems)
        self._load()
        self._dim = existing_dim(description)
        return self._dim

    def _settings_problems(self, description: dict[str, Any]) -> list[str]:
        """Recorded schema version, distance and analyzer vs this store's (the dimension is checked on the
        vector field itself by ``schema_problems``)."""
        if recorded_settings(description) is None:
            log.warning(
                "Milvus collection %r records no cjkrag settings (made by an older cjkrag): its analyzer and "
                "schema version cannot be checked; re-ingest into a new collection to record them",
                self.collection,
            )
            return []
        want = settings(0, self.analyzer)
        del want["dim"]
        return settings_problems(description, want)

    def _incompatible(self, problems: Sequence[str]) -> StoreError:
        return StoreError(
            f"Milvus collection {self.collection!r} at {self.uri!r} is incompatible: {'; '.join(problems)}. "
            "Use another collection name (config `collection`) or drop this one (`cjkrag drop`) and re-ingest"
        )

    def ensure_collection(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise StoreError(f"vector dimension must be a positive int, got {dim!r}")
        description = self._describe()
        if description is not None:
            problems = schema_problems(description, dim)
            problems += self._settings_problems(description)
            if problems:
                raise self._incompatible(problems)
            self._load()
            self._dim = dim
            return
        with self._writing():
            self._create(dim)

    def _create(self, dim: int) -> None:
        import pymilvus

        client = self._c()
        schema = build_schema(pymilvus, dim, settings(dim, self.analyzer))
        self._call(
            "create_collection",
            client.create_collection,
            self.collection,
            schema=schema,
            consistency_level=self.consistency,
        )
        lite = is_lite_uri(self.uri)
        index = client.prepare_index_params()
        index.add_index(
            "vector",
            index_type="FLAT" if lite else "HNSW",
            metric_type="COSINE",
            **({} if lite else {"params": {"M": 16, "efConstruction": 200}}),
        )
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        # Lite: don't poll index builds (pymilvus sleeps 0.5 s per index); the collection is empty anyway
        wait = not lite
        self._call("create_index", client.create_index, self.collection, index, sync=wait)
        for field in SCALAR_INDEXES:
            if lite and field in ("acl", "deny"):
                continue  # Lite 2.5.1: "Only int, varchar, float, double and bool fields support scalar index"
            scalar = client.prepare_index_params()
            scalar.add_index(field, index_type="INVERTED")
            try:
                client.create_index(self.collection, scalar, timeout=CALL_TIMEOUT_S, sync=wait)
            except Exception as exc:  # an engine without it still filters, by scan
                log.info("Milvus: no INVERTED index on %s.%s (%s)", self.collection, field, exc)
        self._call("load_collection", client.load_collection, self.collection)
        self._dim = dim

    def drop_collection(self) -> None:
        client = self._c()
        with self._writing():
            if self._call("has_collection", client.has_collection, self.collection):
                self._call("drop_collection", client.drop_collection, self.collection)
        self._dim = None

    # -- writes -------------------------------------------------------------------------------------------
    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        dim = self._ready_dim()
        if dim is None:
            raise StoreError(
                f"Milvus collection {self.collection!r} does not exist at {self.uri!r}: "
                "call ensure_collection(dim) first (ingestion does)"
            )
        rows = [record_to_row(r, dim) for r in records]  # validate everything before writing anything
        seen: dict[str, int] = {}
        for i, row in enumerate(rows):
            seen[row["chunk_id"]] = i  # last one wins, like sequential upserts
        if len(seen) != len(rows):
            rows = [rows[i] for i in sorted(seen.values())]
        client = self._c()
        with self._writing():
            for batch in batches(rows, BATCH_ROWS, BATCH_BYTES):
                self._call("upsert", client.upsert, self.collection, batch)

    def delete(self, ids: Sequence[str] | None = None, filters: FilterNode | None = None) -> None:
        """Delete by ids, or everything matching ``filters``; with both, the given ids that match."""
        if ids is None and filters is None:
            raise StoreError("delete() needs ids or filters; to remove everything use drop_collection()")
        if self._ready_dim() is None:
            return
        with self._writing():
            self._delete(ids, filters)

    def _delete(self, ids: Sequence[str] | None, filters: FilterNode | None) -> None:
        client = self._c()
        expr = self._expr(filters) if filters is not None else ""
        if ids is None:
            self._call("delete", client.delete, self.collection, filter=expr)
            return
        id_list = [str(i) for i in ids]
        for start in range(0, len(id_list), DELETE_IDS_PER_CALL):
            part = "chunk_id in " + literal(id_list[start : start + DELETE_IDS_PER_CALL])
            self._call(
                "delete", client.delete, self.collection, filter=f"({part}) and ({expr})" if expr else part
            )

    # -- reads ----------------------------------------------------------------------------------------------
    def _expr(self, filters: FilterNode | PreparedExpr | None) -> str:
        """The Milvus expression of a filter: translated (Lite: without NOT), parameters inlined.

        On Lite, what has no complement is resolved to chunk ids first (:meth:`_lite_expr`). Called ONCE per
        query: a hybrid search computes it once for both retrievers (:meth:`search_hybrid`).
        """
        if isinstance(filters, PreparedExpr):
            if filters.store is not self:
                raise StoreError("a prepared filter is valid only for the store that prepared it")
            return filters.expr
        if filters is None:
            return ""
        if not is_lite_uri(self.uri):
            return render(*translate(filters, lite=False))
        return self._lite_expr(filters)

    def _lite_expr(self, node: FilterNode) -> str:
        """Milvus Lite expression of ``node``, every NOT Lite cannot write resolved to chunk ids
        (``connectors/milvus/lite_negation.py``; the limits are this module's, read at call time)."""
        return lite_expr(
            node,
            self._matching_ids,
            max_resolved_ids=MAX_RESOLVED_IDS,
            max_not_resolutions=MAX_NOT_RESOLUTIONS,
            max_filter_resolved_ids=MAX_FILTER_RESOLVED_IDS,
            max_expansion_chars=MAX_EXPANSION_CHARS,
        )

    def _matching_ids(self, expr: str, limit: int) -> list[str] | None:
        """Chunk ids matching ``expr``; None when more than ``limit`` match (counted, not fetched). On Lite
        from the resolution cache while nothing was written to the file since (``resolve_cache.py``)."""
        if self._lite_path is not None:
            return resolve_cache.resolve(self._lite_path, self.collection, expr, limit, self._lookup_ids)
        return self._lookup_ids(expr, limit)

    def _lookup_ids(self, expr: str, limit: int) -> list[str] | None:
        total = self._count_expr(expr)
        if total > limit:
            return None
        if total == 0:
            return []
        return [str(r["chunk_id"]) for r in self._query_expr(expr, ["chunk_id"], total)]

    def _check_top_k(self, top_k: int) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise StoreError(f"top_k must be a positive int, got {top_k!r}")
        if top_k > MAX_TOP_K:
            raise StoreError(f"top_k={top_k} is over Milvus' limit of {MAX_TOP_K}: ask for fewer hits")

    def prepare_filter(self, filters: FilterNode | None) -> PreparedExpr:
        """The filter translated once (Lite: NOT resolved once), for several searches of one query.

        The search pipeline calls it once per query and passes the result to both ``search_dense`` and
        ``search_keyword`` (which also take plain filter nodes); it is valid only for this store.
        """
        return PreparedExpr(self, self._expr(filters))

    def search_dense(
        self,
        vector: Sequence[float],
        top_k: int,
        filters: FilterNode | PreparedExpr | None,
        *,
        fields: Sequence[str] | None = None,
    ) -> list[StoredHit]:
        """``fields``: the stored fields each hit carries (default: all of ``OUTPUT_FIELDS``); ``()`` for ids
        and scores only, the rest fetched later for the hits kept (:meth:`fetch`)."""
        return self._search_dense_expr(vector, top_k, self._expr(filters), fields)

    def search_keyword(
        self,
        terms: Sequence[str],
        top_k: int,
        filters: FilterNode | PreparedExpr | None,
        *,
        fields: Sequence[str] | None = None,
    ) -> list[StoredHit]:
        return self._search_keyword_expr(terms, top_k, self._expr(filters), fields)

    def search_hybrid(
        self, vector: Sequence[float], terms: Sequence[str], top_k: int, filters: FilterNode | None
    ) -> tuple[list[StoredHit], list[StoredHit]]:
        """``(search_dense, search_keyword)`` under ONE translation of ``filters`` (one NOT resolution)."""
        expr = self._expr(filters)
        return self._search_dense_expr(vector, top_k, expr), self._search_keyword_expr(terms, top_k, expr)

    def _search_dense_expr(
        self, vector: Sequence[float], top_k: int, expr: str, fields: Sequence[str] | None = None
    ) -> list[StoredHit]:
        self._check_top_k(top_k)
        dim = self._ready_dim()
        if dim is None:
            return []
        query = [float(x) for x in vector]
        if len(query) != dim:
            raise StoreError(
                f"query vector has {len(query)} dimensions, collection {self.collection!r} has {dim}: "
                "search with the embedding model the collection was built with"
            )
        return self._search(query, "vector", {"metric_type": "COSINE"}, top_k, expr, fields)

    def _search_keyword_expr(
        self, terms: Sequence[str], top_k: int, expr: str, fields: Sequence[str] | None = None
    ) -> list[StoredHit]:
        self._check_top_k(top_k)
        tokens = [t for t in terms if t]
        bad = [t for t in tokens if not isinstance(t, str) or any(c.isspace() for c in t)]
        if bad:
            raise StoreError(
                f"keyword query terms {bad!r} are not whitespace-free strings: pass the analyzer's tokens"
            )
        text = " ".join(tokens)
        if not text or self._ready_dim() is None:
            return []
        try:
            return self._search(text, "sparse", {"metric_type": "BM25"}, top_k, expr, fields)
        except StoreError as exc:
            # Lite 2.5.1: BM25 on a collection without rows divides by an average length of 0 ("NaN or Inf")
            if "NaN or Inf" in str(exc) and self._count_expr("") == 0:
                return []
            raise

    def _search(
        self,
        data: Any,
        field: str,
        params: dict[str, Any],
        top_k: int,
        expr: str,
        fields: Sequence[str] | None,
    ) -> list[StoredHit]:
        from cjkrag.types import StoredHit

        output = self._output_fields(fields)
        client = self._c()
        result = self._call(
            f"search on {field!r}",
            client.search,
            self.collection,
            data=[data],
            anns_field=field,
            limit=top_k,
            filter=expr,
            search_params=params,
            output_fields=list(output),
            consistency_level=self.search_consistency,
        )
        hits: list[StoredHit] = []
        for hit in result[0] if result else []:
            entity = hit.get("entity", {}) if output else {}
            values = {name: plain_value(entity.get(name)) for name in output}
            hits.append(StoredHit(chunk_id=str(hit["id"]), score=float(hit["distance"]), fields=values))
        return hits
