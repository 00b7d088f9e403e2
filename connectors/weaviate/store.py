"""Weaviate adapter (:class:`WeaviateStore`, ``weaviate-client`` v4): self-provided vectors + BM25 over tokens.

Collection (``schema.py``, ``objects.py``): no vectorizer module (cjkrag sends its vectors: one named HNSW
cosine vector ``default``), the analyzer's tokens in ``keywords`` (``whitespace`` tokenization, stopwords
preset ``none``, BM25 k1=1.2 b=0.75), exact-match (``field``-tokenized) ``acl``/``deny``/``doc_id``/
``chunk_id``/``tenant``, ``public`` bool, null state indexed (for ``exists``). cjkrag's settings
``{schema, dim, distance, analyzer}`` are recorded in the collection description; reopening with other
values is refused naming both. The collection name is ``collection`` with its first letter upper-cased
(Weaviate's rule for class names).

Tenants: cjkrag's ``tenant`` is an ordinary filterable property of one single-tenant collection, not
Weaviate multi-tenancy: a Weaviate tenant must be named on every request and no query spans tenants, while
the store protocol counts, queries and deletes across tenants with a filter, as every other backend does.

Writes: ``data.insert_many`` in batches of :data:`BATCH_OBJECTS` with ``uuid5(chunk_id)`` ids (a rewrite
replaces: idempotent), retried with exponential backoff on transient errors only (connection, timeout,
429/5xx, gRPC UNAVAILABLE); any object the server rejects is reported in one StoreError. Reads: the filter
(``filters.py``, the ACL clause included) is passed as the query's own ``filters`` (pre-filter).
``query`` pages with a keyset cursor on ``chunk_id`` (sorted, ``chunk_id > last``) because Weaviate's
``after`` cursor cannot take a filter and offsets stop at ``QUERY_MAXIMUM_RESULTS`` (10,000). Hybrid search
is cjkrag's own fusion of the dense and the BM25 run (Weaviate's ``hybrid`` is not used), like every backend.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from cjkrag.connectors.checks import (
    check_delete,
    check_dim,
    check_query,
    check_terms,
    check_top_k,
    check_vector_dim,
)
from cjkrag.connectors.weaviate import objects, schema
from cjkrag.connectors.weaviate.filters import translate
from cjkrag.errors import ConfigError, StoreError, StoreUnavailable, missing

if TYPE_CHECKING:
    from cjkrag.config import Config
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.types import ChunkRecord, StoredHit

log = logging.getLogger("cjkrag.weaviate")

BATCH_OBJECTS = 200
PAGE = 1000
DELETE_IDS = 1000
MAX_TOP_K = 10000  # Weaviate's default QUERY_MAXIMUM_RESULTS
RETRIES = 4
BACKOFF_S = 0.25
CONNECT_TIMEOUT_S = 5
T = TypeVar("T")
_TRANSIENT_NAMES = ("WeaviateConnectionError", "WeaviateTimeoutError", "WeaviateGRPCUnavailableError",
                    "WeaviateStartUpError", "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutError",
                    "ConnectionError")  # fmt: skip


def parse_url(url: str) -> tuple[str, int, bool]:
    """``http(s)://host[:port]`` -> (host, port, secure); ConfigError naming the setting otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"store.weaviate.url {url!r} is not http(s)://host[:port]: e.g. http://localhost:8080"
        )
    if parts.username or parts.password:
        raise ConfigError(
            "store.weaviate.url holds credentials: remove them and give the API key in $WEAVIATE_API_KEY"
        )
    secure = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if secure else 8080), secure


def transient(exc: BaseException) -> bool:
    """Worth retrying: connection trouble, timeouts, 429/502/503/504, gRPC UNAVAILABLE/DEADLINE_EXCEEDED."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in (429, 502, 503, 504)
    if type(exc).__name__ in _TRANSIENT_NAMES:
        return True
    text = str(exc)
    return any(code in text for code in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED",
                                         "StatusCode.RESOURCE_EXHAUSTED"))  # fmt: skip


class WeaviateStore:
    """A cjkrag collection in Weaviate. Light to build; connects in :meth:`warm_up`."""

    def __init__(
        self,
        url: str,
        collection: str,
        *,
        grpc_port: int = 50051,
        api_key: str | None = None,
        analyzer: str = "",
        client: Any = None,
    ) -> None:
        self.uri = url
        self.host, self.port, self.secure = parse_url(url) if client is None else ("", 0, False)
        self.name = objects.collection_name(collection)
        self.grpc_port, self._api_key, self.analyzer = grpc_port, api_key, analyzer
        self._client = client
        self._lock = threading.RLock()
        self._dim: int | None = None
        # name -> plain property dict (schema.existing_properties)
        self._props: dict[str, dict[str, Any]] = {}

    def settings(self, dim: int) -> dict[str, Any]:
        return {"schema": schema.SCHEMA_VERSION, "dim": dim, "distance": "cosine", "analyzer": self.analyzer}

    # -- connection and errors ------------------------------------------------------------------------
    def warm_up(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            try:
                import weaviate
                from weaviate.classes.init import AdditionalConfig, Auth, Timeout
            except ImportError as exc:
                raise missing("weaviate", "weaviate-client") from exc
            try:
                self._client = weaviate.connect_to_custom(
                    http_host=self.host, http_port=self.port, http_secure=self.secure, grpc_host=self.host,
                    grpc_port=self.grpc_port, grpc_secure=self.secure,
                    auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
                    additional_config=AdditionalConfig(timeout=Timeout(init=CONNECT_TIMEOUT_S, query=30, insert=90)),
                )  # fmt: skip
            except Exception as exc:
                raise StoreUnavailable(
                    f"cannot connect to Weaviate at {self.uri!r} (gRPC port {self.grpc_port}) within "
                    f"{CONNECT_TIMEOUT_S} s: {type(exc).__name__}: {self._scrub(exc)}; start Weaviate "
                    "(`docker compose up weaviate`) or fix store.weaviate.url / grpc_port / $WEAVIATE_API_KEY"
                ) from None
            try:
                version = (self._client.get_meta() or {}).get("version")
            except Exception:  # the meta endpoint is informative only; every call below reports its own errors
                version = None
            problem = objects.server_problem(version)
            if problem:
                self.close()
                raise StoreError(f"{problem} (server at {self.uri!r})")

    def _scrub(self, exc: BaseException) -> str:
        """An error's text with the API key masked (it is never put into a message or a log)."""
        text = str(exc)
        return text.replace(self._api_key, "***") if self._api_key else text

    def _c(self) -> Any:
        if self._client is None:
            self.warm_up()
        return self._client

    def _col(self) -> Any:
        return self._c().collections.get(self.name)

    def _error(self, what: str, exc: BaseException, tries: int = 1) -> StoreError:
        """StoreUnavailable (naming the URI) for a transient error, StoreError otherwise; the key masked."""
        detail = f"{type(exc).__name__}: {self._scrub(exc)}"
        if transient(exc):
            return StoreUnavailable(
                f"Weaviate at {self.uri!r} failed during {what} after {tries} tries: {detail}; check that Weaviate "
                "is up (`docker compose up weaviate`) and store.weaviate.url"
            )
        return StoreError(f"Weaviate {what} on collection {self.name!r} failed: {detail}")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one client call; retry transient errors with exponential backoff and jitter."""
        for attempt in range(RETRIES + 1):
            try:
                return fn()
            except StoreError:
                raise
            except Exception as exc:
                if not transient(exc) or attempt == RETRIES:
                    raise self._error(what, exc, attempt + 1) from None
                delay = BACKOFF_S * 2**attempt * (1 + random.random() / 2)
                log.warning("Weaviate %s: %s; retrying in %.2f s", what, type(exc).__name__, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                client, self._client = self._client, None
                self._dim, self._props = None, {}
                client.close()

    # -- collection ------------------------------------------------------------------------------------
    def _problems(self, config: Any, dim: int | None) -> list[str]:
        stored = objects.read_description(getattr(config, "description", None), self.name)
        want = self.settings(dim if dim is not None else int(stored.get("dim", -1)))
        labels = {"schema": "schema version", "dim": "vector dimension", "analyzer": "analyzer version",
                  "distance": "distance"}  # fmt: skip
        problems = [
            f"{labels.get(k, k)} is {stored.get(k)!r} in the collection but {v!r} here"
            for k, v in want.items()
            if stored.get(k) != v
        ]
        return problems + schema.property_problems(schema.existing_properties(config))

    def _incompatible(self, problems: list[str]) -> StoreError:
        return StoreError(
            f"Weaviate collection {self.name!r} at {self.uri!r} is incompatible: {'; '.join(problems)}. Fix: set "
            "another `collection` name in the config and re-ingest, or restore the settings it was built with"
        )

    def _load(self, dim: int | None) -> int:
        config = self._call("config.get", lambda: self._col().config.get())
        problems = self._problems(config, dim)
        if problems:
            raise self._incompatible(problems)
        self._props = {p["name"]: p for p in schema.existing_properties(config)}
        stored = objects.read_description(config.description, self.name)
        return int(stored["dim"])

    def _exists(self) -> bool:
        return bool(self._call("collections.exists", lambda: self._c().collections.exists(self.name)))

    def _ready_dim(self) -> int | None:
        if self._dim is None:
            with self._lock:
                if not self._exists():
                    return None
                self._dim = self._load(None)
        return self._dim

    def create_arguments(self, dim: int) -> dict[str, Any]:
        """The ``collections.create`` keyword arguments (unit-tested without a server)."""
        from weaviate.classes import config as wvc

        return {
            "name": self.name,
            "description": objects.describe(self.settings(dim)),
            "properties": schema.client_properties(wvc),
            "vector_config": wvc.Configure.Vectors.self_provided(
                name=objects.VECTOR,
                vector_index_config=wvc.Configure.VectorIndex.hnsw(
                    distance_metric=wvc.VectorDistances.COSINE
                ),
            ),
            "inverted_index_config": wvc.Configure.inverted_index(
                bm25_k1=1.2, bm25_b=0.75, index_null_state=True, stopwords_preset=wvc.StopwordsPreset.NONE
            ),
        }

    def ensure_collection(self, dim: int) -> None:
        check_dim(dim)
        with self._lock:
            if not self._exists():
                args = self.create_arguments(dim)
                try:
                    self._c().collections.create(**args)
                except Exception as exc:  # created concurrently: verified below like any existing one
                    if "already exists" not in str(exc):
                        raise self._error("collections.create", exc) from None
            self._dim = self._load(dim)

    def drop_collection(self) -> None:
        with self._lock:
            if self._exists():
                self._call("collections.delete", lambda: self._c().collections.delete(self.name))
            self._dim, self._props = None, {}

    # -- writes -----------------------------------------------------------------------------------------
    def _add_metadata_properties(self, wanted: dict[str, str]) -> None:
        """Declare new flattened metadata properties (``field``-tokenized): never left to auto-schema,
        which would tokenize text by words."""
        problems = schema.metadata_problems(self._props.values(), wanted)
        if problems:
            raise StoreError(
                f"Weaviate collection {self.name!r}: {'; '.join(problems)}. A Weaviate property has one type: "
                "give each metadata key one type in every document (or rename the key)"
            )
        from weaviate.classes import config as wvc

        for name, data_type in sorted(wanted.items()):
            if name in self._props:
                continue
            prop = schema.metadata_property(name, data_type)
            col = self._col()
            try:
                col.config.add_property(schema.client_property(wvc, prop))
            except Exception as exc:
                if "already exists" not in str(exc):  # added concurrently: re-read and check below
                    raise self._error("config.add_property", exc) from None
                self._load(None)
                problems = schema.metadata_problems(self._props.values(), {name: data_type})
                if problems:
                    raise StoreError(f"Weaviate collection {self.name!r}: {'; '.join(problems)}") from None
            self._props[name] = prop

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        dim = self._ready_dim()
        if dim is None:
            raise StoreError(
                f"Weaviate collection {self.name!r} does not exist at {self.uri!r}: "
                "call ensure_collection(dim) first (ingestion does)"
            )
        from weaviate.classes.data import DataObject

        latest = {r.chunk_id: r for r in records}  # last one wins, as a replace would
        wanted: dict[str, str] = {}
        bodies = []
        for r in latest.values():
            if len(r.vector) != dim:
                raise StoreError(
                    f"chunk {r.chunk_id!r} has a {len(r.vector)}-dimension vector, collection {self.name!r} "
                    f"has {dim}: embed with the model the collection was built with"
                )
            for name, (data_type, _) in objects.flatten_metadata(r.metadata).items():
                if wanted.setdefault(name, data_type) != data_type:
                    raise StoreError(
                        f"metadata property {name!r} is a {wanted[name]} in one chunk and a {data_type} in chunk "
                        f"{r.chunk_id!r}: a Weaviate property has one type; give each metadata key one type"
                    )
            bodies.append(
                DataObject(
                    properties=objects.object_properties(r),
                    uuid=objects.object_uuid(r.chunk_id),
                    vector={objects.VECTOR: [float(x) for x in r.vector]},
                )
            )
        with self._lock:
            self._add_metadata_properties(wanted)
        col = self._col()
        for start in range(0, len(bodies), BATCH_OBJECTS):
            batch = bodies[start : start + BATCH_OBJECTS]
            result = self._call("insert_many", lambda b=batch: col.data.insert_many(b))  # type: ignore[misc]
            errors = getattr(result, "errors", None) or {}
            if errors:
                first = [
                    f"{batch[i].properties['chunk_id']}: {e.message}" for i, e in list(errors.items())[:3]
                ]
                raise StoreError(
                    f"Weaviate insert_many on collection {self.name!r}: {len(errors)} of {len(batch)} objects "
                    f"were rejected (first: {first}); the rest of the batch is stored, re-run to retry"
                )

    def delete(self, ids: Sequence[str] | None = None, filters: FilterNode | None = None) -> None:
        check_delete(ids, filters)
        translate(filters)  # validate before anything is removed
        if self._ready_dim() is None:
            return
        col = self._col()
        if ids is None:
            self._delete_where(col, translate(filters))
            return
        from weaviate.classes.query import Filter

        id_list = [str(i) for i in ids]
        for start in range(0, len(id_list), DELETE_IDS):
            part = id_list[start : start + DELETE_IDS]
            by_id = Filter.by_id().contains_any([objects.object_uuid(c) for c in part])
            flt = translate(filters)
            self._delete_where(col, by_id if flt is None else Filter.all_of([by_id, flt]))

    def _delete_where(self, col: Any, where: Any) -> None:
        """``delete_many`` until nothing matches (one call removes at most QUERY_MAXIMUM_RESULTS objects)."""
        while True:
            result = self._call("delete_many", lambda: col.data.delete_many(where=where))
            if getattr(result, "failed", 0):
                raise StoreError(
                    f"Weaviate delete_many on collection {self.name!r}: {result.failed} objects were not deleted"
                )
            if not getattr(result, "matches", 0) or not getattr(result, "successful", 0):
                return

    # -- reads --------------------------------------------------------------------------------------------
    def _hits(self, response: Any, dense: bool) -> list[StoredHit]:
        from cjkrag.types import StoredHit

        hits = []
        for obj in response.objects:
            fields = objects.hit_fields(obj.properties)
            # dense: Weaviate's cosine distance -> cosine similarity; keyword: the BM25 score
            score = 1.0 - float(obj.metadata.distance) if dense else float(obj.metadata.score or 0.0)
            hits.append(StoredHit(chunk_id=str(fields["chunk_id"]), score=score, fields=fields))
        return hits

    def search_dense(
        self, vector: Sequence[float], top_k: int, filters: FilterNode | None
    ) -> list[StoredHit]:
        check_top_k(top_k, MAX_TOP_K)
        flt = translate(filters)
        dim = self._ready_dim()
        if dim is None:
            return []
        query = [float(x) for x in vector]
        check_vector_dim(len(query), dim, f"collection {self.name!r}")
        from weaviate.classes.query import MetadataQuery

        col = self._col()
        response = self._call("near_vector", lambda: col.query.near_vector(
            query, target_vector=objects.VECTOR, limit=top_k, filters=flt,
            return_metadata=MetadataQuery(distance=True), return_properties=list(objects.RETURN_FIELDS),
        ))  # fmt: skip
        return self._hits(response, True)

    def search_keyword(self, terms: Sequence[str], top_k: int, filters: FilterNode | None) -> list[StoredHit]:
        check_top_k(top_k, MAX_TOP_K)
        tokens = check_terms(terms)
        flt = translate(filters)
        if not tokens or self._ready_dim() is None:
            return []
        from weaviate.classes.query import MetadataQuery

        col = self._col()
        response = self._call("bm25", lambda: col.query.bm25(
            " ".join(tokens), query_properties=["keywords"], limit=top_k, filters=flt,
            return_metadata=MetadataQuery(score=True), return_properties=list(objects.RETURN_FIELDS),
        ))  # fmt: skip
        return [h for h in self._hits(response, False) if h.score > 0]

    def query(
        self, filters: FilterNode | None, fields: Sequence[str], limit: int = 16384
    ) -> list[dict[str, object]]:
        output = check_query(fields, objects.QUERY_FIELDS, limit)
        translate(filters)
        if self._ready_dim() is None:
            return []
        from weaviate.classes.query import Sort

        col = self._col()
        rows: list[dict[str, object]] = []
        last: str | None = None
        with_vector = "vector" in output
        while len(rows) < limit:
            size = min(PAGE, limit - len(rows))
            flt = translate(objects.page_filter(filters, last))
            response = self._call("fetch_objects", lambda f=flt, n=size: col.query.fetch_objects(  # type: ignore[misc]
                filters=f, limit=n, sort=Sort.by_property("chunk_id", ascending=True),
                return_properties=list(objects.RETURN_FIELDS), include_vector=[objects.VECTOR] if with_vector else False,
            ))  # fmt: skip
            page = list(response.objects)
            ids = [str(o.properties.get("chunk_id")) for o in page]
            if len(page) == size:  # another page follows: its cursor must not skip anything
                objects.check_keyset_page(ids, last)
            for obj in page:
                row = objects.hit_fields(obj.properties)
                if with_vector:
                    row["vector"] = [float(x) for x in (obj.vector or {}).get(objects.VECTOR) or []]
                rows.append({name: row.get(name) for name in output})
            if len(page) < size:
                break
            last = ids[-1]
        return rows

    def count(self, filters: FilterNode | None = None) -> int:
        flt = translate(filters)
        if self._ready_dim() is None:
            return 0
        col = self._col()
        result = self._call("aggregate", lambda: col.aggregate.over_all(total_count=True, filters=flt))
        return int(result.total_count or 0)


def from_config(config: Config) -> WeaviateStore:
    """``store.backend: weaviate`` (see ``connectors.registry``); the API key only from ``api_key_env``."""
    from cjkrag.connectors.registry import secret_from_env

    w = config.store.weaviate
    return WeaviateStore(
        w.url,
        config.collection,
        grpc_port=w.grpc_port,
        api_key=secret_from_env(w.api_key_env, "store.weaviate.api_key_env"),
        analyzer=config.analyzer_tag(),
    )
