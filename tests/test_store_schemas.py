"""Elasticsearch and Weaviate adapters without a server: mapping/schema bodies, their verification (issue 8
item 4: an index or collection whose ``acl``/``deny`` are not exact-match fields is refused), bulk and query
bodies with the ACL clause, and error mapping. The fake client below is named so: it records calls in the
shapes elasticsearch-py 8/9 uses and answers ``get_mapping`` as Elasticsearch does, including the dynamic
``text`` + ``.keyword`` mapping a server makes for an index created without cjkrag's mapping.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from cjkrag.connectors.elasticsearch import schema as es_schema
from cjkrag.connectors.elasticsearch.filters import translate as es_translate
from cjkrag.connectors.elasticsearch.store import ElasticsearchStore
from cjkrag.connectors.filters import acl_filter
from cjkrag.connectors.weaviate import schema as wv_schema
from cjkrag.errors import StoreError, StoreUnavailable
from tests.conformance.base import make_record

DYNAMIC_TEXT = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}


class FakeES:
    """Recorded-shape fake of ``elasticsearch.Elasticsearch`` (indices.exists/create/get_mapping, search)."""

    def __init__(self, mappings: dict[str, Any] | None = None, fail: Exception | None = None) -> None:
        self.mappings = mappings
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.indices = types.SimpleNamespace(
            exists=self._exists, create=self._create, get_mapping=self._get_mapping, delete=self._delete
        )

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def _exists(self, *, index: str) -> bool:
        self._check()
        return self.mappings is not None

    def _create(self, *, index: str, settings: dict[str, Any], mappings: dict[str, Any]) -> dict[str, Any]:
        self._check()
        assert index == index.lower(), "Elasticsearch index names are lowercase"
        assert self.mappings is None, "resource_already_exists_exception"
        self.calls.append(("create", {"index": index, "settings": settings, "mappings": mappings}))
        self.mappings = mappings
        return {"acknowledged": True}

    def _get_mapping(self, *, index: str) -> dict[str, Any]:
        self._check()
        return {index: {"mappings": self.mappings}}

    def _delete(self, *, index: str) -> None:
        self.mappings = None

    def search(self, *, index: str, **body: Any) -> dict[str, Any]:
        self._check()
        assert self.mappings is not None, "index_not_found_exception"
        self.calls.append(("search", body))
        return {"hits": {"hits": [{"_id": "c1", "_score": 0.9, "_source": {"chunk_id": "c1", "text": "t"}}]}}

    def count(self, *, index: str, query: dict[str, Any]) -> dict[str, int]:
        self._check()
        self.calls.append(("count", {"query": query}))
        return {"count": 3}


def es_store(client: FakeES) -> ElasticsearchStore:
    return ElasticsearchStore("http://es.example:9200", "Cjkrag", client=client, analyzer="a1")


# -- Elasticsearch: the mapping is exact where access depends on it -----------------------------------------
def test_created_index_has_exact_access_fields_and_passes_verification() -> None:
    client = FakeES()
    store = es_store(client)
    store.ensure_collection(8)
    store.ensure_collection(8)  # twice: verified, not recreated
    [(_, created)] = [c for c in client.calls if c[0] == "create"]
    props = created["mappings"]["properties"]
    assert created["index"] == "cjkrag"
    for field in ("acl", "deny", "doc_id", "tenant", "chunk_id"):
        assert props[field] == {"type": "keyword"}, field
    assert created["mappings"]["dynamic"] == "strict"
    assert props["keywords"]["analyzer"] == "whitespace"
    assert props["vector"]["similarity"] == "cosine" and props["vector"]["dims"] == 8
    assert props["vector"]["index_options"]["type"] == "hnsw"
    assert es_schema.mapping_problems(created["mappings"], store.settings(8)) == []


@pytest.mark.parametrize("field", ["acl", "deny", "doc_id", "tenant"])
def test_dynamically_mapped_access_field_is_refused(field: str) -> None:
    mappings = es_schema.index_body(8, {"schema": 1, "analyzer": "a1", "dim": 8})["mappings"]
    mappings["properties"][field] = DYNAMIC_TEXT  # what Elasticsearch makes of a string without a mapping
    store = es_store(FakeES(mappings))
    with pytest.raises(StoreError, match=rf"'{field}' is mapped as text, expected keyword") as info:
        store.ensure_collection(8)
    assert "collection" in str(info.value)  # the fix
    for read in (lambda: store.count(), lambda: store.search_keyword(["東京"], 3, acl_filter(["user:a"]))):
        with pytest.raises(
            StoreError, match=field
        ):  # reads refuse it too: no query runs on a fail-open index
            read()


def test_other_dimension_and_analyzer_are_refused_with_both_values() -> None:
    mappings = es_schema.index_body(8, {"schema": 1, "analyzer": "old", "dim": 8})["mappings"]
    store = es_store(FakeES(mappings))
    with pytest.raises(StoreError) as info:
        store.ensure_collection(16)
    message = str(info.value)
    assert "'old'" in message and "'a1'" in message and "8" in message and "16" in message


def test_query_bodies_carry_the_acl_clause_inside_the_search() -> None:
    client = FakeES()
    store = es_store(client)
    store.ensure_collection(4)
    flt = acl_filter(["user:alice", "group:eng"])
    clause = es_translate(flt)
    hits = store.search_dense([1.0, 0.0, 0.0, 0.0], 5, flt)
    store.search_keyword(["東京", "首都", "東京"], 5, flt)
    store.count(flt)
    (_, knn), (_, bm25), (_, count) = [c for c in client.calls if c[0] != "create"]
    assert knn["knn"]["filter"] == clause and knn["knn"]["k"] == 5  # pre-filter inside kNN, not post
    assert hits[0].score == pytest.approx(0.8)  # ES cosine score (1+cos)/2 -> cos
    assert bm25["query"]["bool"]["filter"] == [clause]
    assert bm25["query"]["bool"]["should"] == [{"term": {"keywords": t}} for t in ["東京", "首都", "東京"]]
    assert count["query"] == {"bool": {"filter": [clause]}}
    deny = str(clause)
    assert "must_not" in deny and "'deny'" in deny and "user:alice" in deny and "group:eng" in deny


def test_bulk_actions_are_idempotent_by_chunk_id() -> None:
    rec = make_record("c-1", keywords=["東京", "首都"], acl=["group:a"], deny=["user:x"])
    [action] = es_schema.index_actions("idx", [rec])
    assert action["_op_type"] == "index" and action["_id"] == "c-1" and action["_index"] == "idx"
    src = action["_source"]
    assert src["keywords"] == "東京 首都" and src["acl"] == ["group:a"] and src["deny"] == ["user:x"]
    assert set(src) - {"keywords", "vector"} == set(es_schema.SOURCE_FIELDS)


def test_bulk_failures_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    helpers = pytest.importorskip("elasticsearch.helpers")
    client = FakeES()
    store = es_store(client)
    store.ensure_collection(8)
    seen: dict[str, Any] = {}

    def fake_streaming_bulk(cl: Any, actions: list[dict[str, Any]], **kw: Any) -> Any:
        seen.update(kw)
        for i, a in enumerate(actions):
            ok = i % 2 == 0
            yield (
                ok,
                {"index": {"_id": a["_id"], "status": 201 if ok else 400, "error": None if ok else "mapper"}},
            )

    monkeypatch.setattr(helpers, "streaming_bulk", fake_streaming_bulk)
    with pytest.raises(StoreError, match="2 of 4 items failed"):
        store.upsert([make_record(f"b{i}") for i in range(4)])
    assert seen["refresh"] == "wait_for" and seen["max_retries"] > 0 and seen["raise_on_error"] is False


def test_unreachable_server_is_store_unavailable_naming_the_url() -> None:
    class ConnectionError(Exception):  # the name elastic_transport uses
        pass

    store = es_store(FakeES(fail=ConnectionError("refused")))
    with pytest.raises(StoreUnavailable, match=r"http://es\.example:9200"):
        store.count()
    bad_request = Exception("parsing_exception")
    bad_request.status_code = 400  # type: ignore[attr-defined]
    with pytest.raises(StoreError) as info:
        es_store(FakeES(fail=bad_request)).count()
    assert not isinstance(info.value, StoreUnavailable)


# -- Weaviate ----------------------------------------------------------------------------------------------
def _existing(tokenization: dict[str, str]) -> list[Any]:
    """Property objects shaped like weaviate v4 ``_Property`` (enums from the real client)."""
    wvc = pytest.importorskip("weaviate.classes.config")
    out = []
    for p in wv_schema.properties():
        tok = tokenization.get(p["name"], p["tokenization"])
        out.append(
            types.SimpleNamespace(
                name=p["name"],
                data_type=wvc.DataType(p["data_type"]),
                tokenization=wvc.Tokenization(tok) if tok else None,
                index_filterable=p["filterable"],
                index_searchable=p["searchable"],
            )
        )
    return out


def test_weaviate_schema_verifies_and_uses_field_tokenization() -> None:
    wvc = pytest.importorskip("weaviate.classes.config")
    config = types.SimpleNamespace(properties=_existing({}))
    assert wv_schema.property_problems(wv_schema.existing_properties(config)) == []
    built = {p.name: p for p in wv_schema.client_properties(wvc)}
    assert built["acl"].tokenization == wvc.Tokenization.FIELD
    assert built["deny"].dataType == wvc.DataType.TEXT_ARRAY
    assert built["keywords"].tokenization == wvc.Tokenization.WHITESPACE


@pytest.mark.parametrize("field", ["acl", "deny", "doc_id", "tenant"])
def test_weaviate_word_tokenized_access_property_is_refused(field: str) -> None:
    config = types.SimpleNamespace(properties=_existing({field: "word"}))
    problems = wv_schema.property_problems(wv_schema.existing_properties(config))
    assert len(problems) == 1 and field in problems[0] and "'word'" in problems[0]
    if field in ("acl", "deny"):
        assert "fails open" in problems[0]
