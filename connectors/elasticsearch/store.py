"""Elasticsearch adapter (:class:`ElasticsearchStore`): ``dense_vector`` kNN + BM25 over analyzer tokens.

Usable as the whole store (``store.backend: elasticsearch``) or as the keyword side of another store
(``store.keyword_backend: elasticsearch``, see ``connectors/paired.py``). Mapping and request bodies are in
``schema.py``; an index whose access fields are not ``keyword`` is refused (``schema.mapping_problems``).

Writes: ``helpers.streaming_bulk`` in chunks of 500, retried by the helper on 429 with exponential backoff
(``max_retries``/``initial_backoff``), every failed item reported in one StoreError. Refresh policy: the
configured ``refresh`` (``wait_for`` by default: a write returns once it is searchable, which ingestion and
the ACL-change guarantees rely on; ``false`` is faster for a bulk load that is searched later). Reads:
``knn`` with the filter inside (pre-filter), BM25 ``term`` clauses on the whitespace-analyzed ``keywords``;
``query`` pages with ``search_after`` on ``chunk_id`` (no 10k window). Connection errors and 5xx are
StoreUnavailable naming the URL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cjkrag.connectors.checks import (
    check_delete,
    check_dim,
    check_query,
    check_terms,
    check_top_k,
    check_vector_dim,
)
from cjkrag.connectors.elasticsearch import schema
from cjkrag.connectors.elasticsearch.filters import translate
from cjkrag.errors import ConfigError, StoreError, StoreUnavailable, missing

if TYPE_CHECKING:
    from cjkrag.config import Config
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.types import ChunkRecord, StoredHit

log = logging.getLogger("cjkrag.elasticsearch")

CONNECT_TIMEOUT_S = 5
BULK_CHUNK = 500
PAGE = 1000
MAX_TOP_K = 10000


class ElasticsearchStore:
    def __init__(
        self,
        url: str,
        index: str,
        *,
        api_key: str | None = None,
        refresh: str = "wait_for",
        int8_hnsw: bool = False,
        analyzer: str = "",
        client: Any = None,
    ) -> None:
        if not url and client is None:
            raise ConfigError("store.elasticsearch.url is empty: give http(s)://host:9200")
        self.uri, self.index = url, index.lower()  # ES index names are lowercase
        self._api_key, self.refresh, self.int8_hnsw, self.analyzer = api_key, refresh, int8_hnsw, analyzer
        self._client = client
        self._dim: int | None = None

    def settings(self, dim: int | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"schema": schema.SCHEMA_VERSION, "analyzer": self.analyzer}
        if dim is not None:
            meta["dim"] = dim
        return meta

    # -- connection and errors ------------------------------------------------------------------------
    def warm_up(self) -> None:
        if self._client is not None:
            return
        try:
            from elasticsearch import Elasticsearch
        except ImportError as exc:
            raise missing("elasticsearch", "elasticsearch") from exc
        client = Elasticsearch(
            self.uri, api_key=self._api_key, request_timeout=CONNECT_TIMEOUT_S, retry_on_timeout=True
        )
        self._client = client
        self._call("info", client.info)

    def _c(self) -> Any:
        if self._client is None:
            self.warm_up()
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Exception) -> StoreError:
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "meta", None), "status", None)
        name = type(exc).__name__
        if name in ("ConnectionError", "ConnectionTimeout", "TransportError") or (
            isinstance(status, int) and status >= 500
        ):
            return StoreUnavailable(
                f"Elasticsearch at {self.uri!r} failed during {what} on index {self.index!r}: {name}: {exc}; start "
                "Elasticsearch (`docker compose up elasticsearch`) or fix store.elasticsearch.url / ES_API_KEY"
            )
        return StoreError(f"Elasticsearch {what} on index {self.index!r} failed: {name}: {exc}")

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._dim = None
            close = getattr(client, "close", None)
            if close is not None:
                close()

    # -- index ----------------------------------------------------------------------------------------------
    def _mappings(self) -> dict[str, Any] | None:
        c = self._c()
        if not self._call("indices.exists", c.indices.exists, index=self.index):
            return None
        body = self._call("indices.get_mapping", c.indices.get_mapping, index=self.index)
        found: dict[str, Any] = dict(body.body if hasattr(body, "body") else body)
        first: dict[str, Any] = next(iter(found.values()), {})
        return dict(first.get("mappings") or {})

    def _verify(self, mappings: dict[str, Any], dim: int | None) -> int:
        problems = schema.mapping_problems(mappings, self.settings(dim))
        stored_dim = (mappings.get("properties", {}).get("vector") or {}).get("dims")
        if dim is not None and stored_dim != dim:
            problems.append(f"vector dimension is {stored_dim!r} in the index but {dim!r} here")
        if problems:
            raise StoreError(
                f"Elasticsearch index {self.index!r} at {self.uri!r} cannot be used: {'; '.join(problems)}. Fix: set "
                "another `collection` name so cjkrag creates a correctly mapped index, then re-ingest"
            )
        return int(stored_dim or 0)

    def _ready_dim(self) -> int | None:
        if self._dim is None:
            mappings = self._mappings()
            if mappings is None:
                return None
            self._dim = self._verify(mappings, None)
        return self._dim

    def ensure_collection(self, dim: int) -> None:
        check_dim(dim)
        mappings = self._mappings()
        if mappings is None:
            body = schema.index_body(dim, self.settings(dim), int8_hnsw=self.int8_hnsw)
            c = self._c()
            try:
                c.indices.create(index=self.index, settings=body["settings"], mappings=body["mappings"])
            except Exception as exc:
                if "resource_already_exists" not in str(exc):  # created concurrently: verify it below
                    raise self._error("indices.create", exc) from exc
            mappings = self._mappings() or {}
        self._dim = self._verify(mappings, dim)

    def drop_collection(self) -> None:
        c = self._c()
        if self._call("indices.exists", c.indices.exists, index=self.index):
            self._call("indices.delete", c.indices.delete, index=self.index)
        self._dim = None

    # -- writes -----------------------------------------------------------------------------------------------
    def _bulk(self, actions: list[dict[str, Any]], ok_statuses: tuple[int, ...] = ()) -> None:
        from elasticsearch import helpers

        failed: list[str] = []
        try:
            for ok, item in helpers.streaming_bulk(
                self._c(), actions, chunk_size=BULK_CHUNK, max_retries=4, initial_backoff=0.5, max_backoff=8,
                raise_on_error=False, raise_on_exception=True, refresh=self.refresh,
            ):  # fmt: skip
                if not ok:
                    result: dict[str, Any] = next(iter(item.values()), {})
                    if result.get("status") not in ok_statuses:
                        failed.append(f"{result.get('_id')}: {result.get('error') or result.get('status')}")
        except StoreError:
            raise
        except Exception as exc:
            raise self._error("bulk", exc) from exc
        if failed:
            raise StoreError(
                f"Elasticsearch bulk on index {self.index!r}: {len(failed)} of {len(actions)} items failed "
                f"(first: {failed[:3]})"
            )

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        dim = self._ready_dim()
        if dim is None:
            raise StoreError(
                f"Elasticsearch index {self.index!r} does not exist at {self.uri!r}: call ensure_collection(dim) first"
            )
        latest = {r.chunk_id: r for r in records}
        for r in latest.values():
            if len(r.vector) != dim:
                raise StoreError(
                    f"chunk {r.chunk_id!r} has a {len(r.vector)}-dimension vector, index has {dim}"
                )
        self._bulk(schema.index_actions(self.index, list(latest.values())))

    def delete(self, ids: Sequence[str] | None = None, filters: FilterNode | None = None) -> None:
        check_delete(ids, filters)
        if self._ready_dim() is None:
            return
        flt = translate(filters)
        if ids is not None and flt is None:
            self._bulk(schema.delete_actions(self.index, [str(i) for i in ids]), ok_statuses=(404,))
            return
        query = schema.filter_query(flt)
        if ids is not None:
            query["bool"]["filter"].append({"terms": {"chunk_id": [str(i) for i in ids]}})
        c = self._c()
        self._call(
            "delete_by_query", c.delete_by_query, index=self.index, query=query, refresh=True, conflicts="proceed",
            wait_for_completion=True,
        )  # fmt: skip

    # -- reads ------------------------------------------------------------------------------------------------
    def _hits(self, response: Any, dense: bool) -> list[StoredHit]:
        from cjkrag.types import StoredHit

        hits = []
        for h in (response.get("hits") or {}).get("hits") or []:
            src = dict(h.get("_source") or {})
            score = float(h.get("_score") or 0.0)
            hits.append(
                StoredHit(
                    str(src.get("chunk_id", h.get("_id"))),
                    schema.cosine_from_score(score) if dense else score,
                    src,
                )
            )
        return hits

    def search_dense(
        self, vector: Sequence[float], top_k: int, filters: FilterNode | None
    ) -> list[StoredHit]:
        check_top_k(top_k, MAX_TOP_K)
        flt = translate(filters)
        dim = self._ready_dim()
        if dim is None:
            return []
        check_vector_dim(len(vector), dim, f"index {self.index!r}")
        c = self._c()
        return self._hits(
            self._call("search", c.search, index=self.index, **schema.knn_body(vector, top_k, flt)), True
        )

    def search_keyword(self, terms: Sequence[str], top_k: int, filters: FilterNode | None) -> list[StoredHit]:
        check_top_k(top_k, MAX_TOP_K)
        tokens = check_terms(terms)
        flt = translate(filters)
        if not tokens or self._ready_dim() is None:
            return []
        c = self._c()
        return self._hits(
            self._call("search", c.search, index=self.index, **schema.bm25_body(tokens, top_k, flt)), False
        )

    def query(
        self, filters: FilterNode | None, fields: Sequence[str], limit: int = 16384
    ) -> list[dict[str, object]]:
        output = check_query(fields, schema.SOURCE_FIELDS, limit)
        flt = translate(filters)
        if self._ready_dim() is None:
            return []
        c = self._c()
        rows: list[dict[str, object]] = []
        after: list[Any] | None = None
        while len(rows) < limit:
            body: dict[str, Any] = {"query": schema.filter_query(flt), "size": min(PAGE, limit - len(rows)),
                                    "sort": [{"chunk_id": "asc"}], "_source": output}  # fmt: skip
            if after is not None:
                body["search_after"] = after
            hits = (self._call("search", c.search, index=self.index, **body).get("hits") or {}).get(
                "hits"
            ) or []
            rows.extend({k: (h.get("_source") or {}).get(k) for k in output} for h in hits)
            if len(hits) < body["size"]:
                break
            after = hits[-1].get("sort")
        return rows

    def count(self, filters: FilterNode | None = None) -> int:
        flt = translate(filters)
        if self._ready_dim() is None:
            return 0
        c = self._c()
        return int(self._call("count", c.count, index=self.index, query=schema.filter_query(flt))["count"])


def from_config(config: Config) -> ElasticsearchStore:
    """``store.backend: elasticsearch`` (see ``connectors.registry``)."""
    from cjkrag.connectors.registry import secret_from_env

    e = config.store.elasticsearch
    return ElasticsearchStore(
        e.url,
        config.collection,
        api_key=secret_from_env(e.api_key_env, "store.elasticsearch.api_key_env"),
        refresh=e.refresh,
        int8_hnsw=e.int8_hnsw,
        analyzer=config.analyzer_tag(),
    )
