"""WeaviateStore without a server: the collection it creates, the objects and filters it sends (the ACL clause
inside every query), batching, retries on transient errors only, error mapping and paging.

The server-side behaviour (BM25 scores, filter semantics, persistence) is checked by the conformance suite
(tests/conformance, ``TestWeaviateServer``), which runs when WEAVIATE_URL is set. Here the client is a
recording double (``RecordingClient``): it returns canned responses and keeps every request; it does not
pretend to search.
"""

from __future__ import annotations

import types
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from weaviate.collections.filters import _FilterToGRPC

from cjkrag.connectors.filters import Condition, acl_filter
from cjkrag.connectors.weaviate import objects, schema
from cjkrag.connectors.weaviate import store as store_mod
from cjkrag.connectors.weaviate.store import WeaviateStore
from cjkrag.errors import ConfigError, StoreError, StoreUnavailable
from tests.conformance.base import make_record

DIM = 8


def grpc(flt: Any) -> str:
    return str(_FilterToGRPC.convert(flt))


# ---------------------------------------------------------------------------------------- recording client
def _config(dim: int = DIM, analyzer: str = "an-1", schema_version: int = schema.SCHEMA_VERSION) -> Any:
    props = [
        types.SimpleNamespace(name=p["name"], data_type=p["data_type"], tokenization=p["tokenization"],
                              index_filterable=p["filterable"], index_searchable=p["searchable"])
        for p in schema.properties()
    ]  # fmt: skip
    meta = {"schema": schema_version, "dim": dim, "distance": "cosine", "analyzer": analyzer}
    return types.SimpleNamespace(description=objects.describe(meta), properties=props)


def obj(
    chunk_id: str, *, distance: float | None = None, score: float | None = None, vector: Any = None
) -> Any:
    props = objects.object_properties(make_record(chunk_id))
    return types.SimpleNamespace(
        properties=props,
        metadata=types.SimpleNamespace(distance=distance, score=score),
        vector={objects.VECTOR: vector} if vector is not None else {},
    )


class RecordingCollection:
    def __init__(self, client: RecordingClient) -> None:
        self.client = client
        self.config = types.SimpleNamespace(get=self._get, add_property=self._add_property)
        self.data = types.SimpleNamespace(insert_many=self._insert_many, delete_many=self._delete_many)
        self.query = types.SimpleNamespace(
            near_vector=self._rec("near_vector"),
            bm25=self._rec("bm25"),
            fetch_objects=self._rec("fetch_objects"),
        )
        self.aggregate = types.SimpleNamespace(over_all=self._rec("over_all"))

    def _get(self) -> Any:
        return self.client.config

    def _add_property(self, prop: Any) -> None:
        self.client.calls.append(("add_property", prop))
        self.client.config.properties.append(
            types.SimpleNamespace(name=prop.name, data_type=prop.dataType, tokenization=prop.tokenization,
                                  index_filterable=prop.indexFilterable, index_searchable=prop.indexSearchable)
        )  # fmt: skip

    def _insert_many(self, batch: list[Any]) -> Any:
        self.client.calls.append(("insert_many", batch))
        return self.client.respond("insert_many", batch)

    def _delete_many(self, where: Any) -> Any:
        self.client.calls.append(("delete_many", where))
        return self.client.respond("delete_many", where)

    def _rec(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.client.calls.append((name, (args, kwargs)))
            return self.client.respond(name, (args, kwargs))

        return call


class RecordingClient:
    """Canned answers by method name (a list is consumed in order; an exception is raised)."""

    def __init__(self, exists: bool = True, config: Any = None) -> None:
        self.exists = exists
        self.config = config or _config()
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, list[Any]] = {}
        self.collections = types.SimpleNamespace(
            exists=lambda name: self.exists, get=lambda name: RecordingCollection(self),
            create=self._create, delete=lambda name: self.calls.append(("delete", name)),
        )  # fmt: skip
        self.closed = False

    def _create(self, **kwargs: Any) -> None:
        self.calls.append(("create", kwargs))
        self.exists = True
        self.config = types.SimpleNamespace(
            description=kwargs["description"], properties=_config().properties
        )

    def respond(self, name: str, request: Any) -> Any:
        queue = self.answers.get(name)
        answer = queue.pop(0) if queue else None
        if isinstance(answer, BaseException):
            raise answer
        if answer is None:
            answer = {
                "insert_many": types.SimpleNamespace(errors={}),
                "delete_many": types.SimpleNamespace(matches=0, successful=0, failed=0),
                "over_all": types.SimpleNamespace(total_count=0),
            }.get(name, types.SimpleNamespace(objects=[]))
        return answer

    def named(self, name: str) -> list[Any]:
        return [req for n, req in self.calls if n == name]

    def close(self) -> None:
        self.closed = True


def make_store(client: RecordingClient, **kwargs: Any) -> WeaviateStore:
    return WeaviateStore("http://wv.example:8080", "cjkrag", client=client, analyzer="an-1", **kwargs)


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod.time, "sleep", lambda s: None)


# ---------------------------------------------------------------------------------------- the collection
def test_created_collection_has_own_vectors_exact_access_fields_and_whitespace_keywords() -> None:
    client = RecordingClient(exists=False)
    store = make_store(client)
    store.ensure_collection(DIM)
    [args] = client.named("create")
    assert args["name"] == "Cjkrag"
    vc = args["vector_config"]._to_dict()
    assert vc["vectorizer"] == {"none": {}}  # no vectorizer module: cjkrag sends its vectors
    assert vc["vectorIndexType"] == "hnsw" and vc["vectorIndexConfig"]["distance"] == "cosine"
    inv = args["inverted_index_config"]._to_dict()
    assert inv["bm25"] == {"b": 0.75, "k1": 1.2} and inv["indexNullState"] is True
    assert str(getattr(inv["stopwords"]["preset"], "value", inv["stopwords"]["preset"])) == "none"
    props = {p.name: p for p in args["properties"]}
    for name in ("acl", "deny", "doc_id", "chunk_id", "tenant"):
        assert props[name].tokenization.value == "field" and props[name].indexFilterable, name
    assert props["acl"].dataType.value == "text[]" and props["public"].dataType.value == "boolean"
    assert props["keywords"].tokenization.value == "whitespace" and props["keywords"].indexSearchable
    assert objects.read_description(args["description"], "Cjkrag") == {
        "schema": schema.SCHEMA_VERSION, "dim": DIM, "distance": "cosine", "analyzer": "an-1"
    }  # fmt: skip
    store.ensure_collection(DIM)  # twice: nothing created again
    assert len(client.named("create")) == 1


@pytest.mark.parametrize(
    ("config", "label", "stored", "here"),
    [
        (_config(dim=16), "vector dimension", "16", "8"),
        (_config(analyzer="an-0"), "analyzer version", "'an-0'", "'an-1'"),
        (_config(schema_version=0), "schema version", "0", str(schema.SCHEMA_VERSION)),
    ],
)
def test_reuse_with_other_settings_is_refused_naming_both_values(
    config: Any, label: str, stored: str, here: str
) -> None:
    with pytest.raises(StoreError) as info:
        make_store(RecordingClient(config=config)).ensure_collection(DIM)
    message = str(info.value)
    assert f"{label} is {stored} in the collection but {here} here" in message
    assert "another `collection` name" in message


def test_foreign_collection_and_word_tokenized_acl_are_refused() -> None:
    foreign = types.SimpleNamespace(description="my own class", properties=_config().properties)
    with pytest.raises(StoreError, match="not created by cjkrag"):
        make_store(RecordingClient(config=foreign)).count()
    config = _config()
    next(p for p in config.properties if p.name == "deny").tokenization = "word"
    with pytest.raises(StoreError, match=r"'deny' has 'word' tokenization.*fails open"):
        make_store(RecordingClient(config=config)).count()


def test_missing_collection_reads_empty_and_upsert_asks_for_ensure_collection() -> None:
    client = RecordingClient(exists=False)
    store = make_store(client)
    assert store.count() == 0 and store.query(None, ["chunk_id"]) == []
    assert store.search_dense([0.1] * DIM, 3, None) == [] and store.search_keyword(["首都"], 3, None) == []
    with pytest.raises(StoreError, match="ensure_collection"):
        store.upsert([make_record("x")])


@pytest.mark.parametrize(("name", "ok"), [("cjkrag", "Cjkrag"), ("docs_v2", "Docs_v2"), ("_x", None)])
def test_collection_names(name: str, ok: str | None) -> None:
    if ok is None:
        with pytest.raises(ConfigError, match="start with a letter"):
            objects.collection_name(name)
    else:
        assert objects.collection_name(name) == ok


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://h", "http://user:pw@h:8080"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match=r"store\.weaviate\.url") as info:
        WeaviateStore(url, "c")
    assert "pw" not in str(info.value)


def test_url_parts() -> None:
    assert store_mod.parse_url("https://wv.example") == ("wv.example", 443, True)
    assert store_mod.parse_url("http://127.0.0.1:9090") == ("127.0.0.1", 9090, False)


# ---------------------------------------------------------------------------------------- objects
def test_object_body_ids_keywords_and_access_fields() -> None:
    rec = make_record("c1", keywords=["東京", "首都", "東京"], acl=["user:alice"], deny=[], public=True,
                      metadata={"category": "地理", "year": 2024, "tags": ["a", "b"], "a": {"b": True}})  # fmt: skip
    body = objects.object_properties(rec)
    assert body["keywords"] == "東京 首都 東京"  # tokens as they are, repeated ones kept (term frequency)
    assert body["acl"] == ["user:alice"] and "deny" not in body and body["public"] is True
    assert body["meta_category"] == "地理" and body["meta_year"] == 2024.0 and body["meta_tags"] == ["a", "b"]
    assert body["meta_a__b"] is True
    assert objects.hit_fields(body)["metadata"] == rec.metadata  # whole metadata back, ints stay ints
    assert objects.object_uuid("c1") == objects.object_uuid("c1") != objects.object_uuid("c2")
    assert uuid.UUID(objects.object_uuid("c1")).version == 5


def test_metadata_that_cannot_be_a_typed_property_is_left_out() -> None:
    flat = objects.flatten_metadata(
        {"注释": "x", "_private": 1, "a__b": 2, "mixed": [1, "x"], "none": None, "empty": [], "objs": [{"k": 1}],
         "deep": {"b": {"c": {"d": {"e": 1}}}}, "ok": {"b": {"c": {"d": 1}}}, "nums": [1, 2.5], "flag": False}
    )  # fmt: skip
    assert flat == {
        "meta_ok__b__c__d": ("number", 1.0), "meta_nums": ("number[]", [1.0, 2.5]), "meta_flag": ("boolean", False)
    }  # fmt: skip


def test_upsert_batches_dedupes_and_declares_metadata_properties_field_tokenized() -> None:
    client = RecordingClient()
    store = make_store(client)
    records = [make_record(f"r{i}", metadata={"category": "x"}) for i in range(450)]
    store.upsert([*records, make_record("r0", text="replaced")])
    batches = client.named("insert_many")
    assert [len(b) for b in batches] == [200, 200, 50]
    first = batches[0][0]
    assert first.uuid == objects.object_uuid("r0") and first.properties["text"] == "replaced"  # last one wins
    assert list(first.vector) == [objects.VECTOR] and len(first.vector[objects.VECTOR]) == DIM
    [prop] = [p for n, p in client.calls if n == "add_property"]
    assert prop.name == "meta_category" and prop.tokenization.value == "field" and prop.indexFilterable
    store.upsert([make_record("r1", metadata={"category": "y"})])
    assert len([n for n, _ in client.calls if n == "add_property"]) == 1  # declared once


def test_metadata_type_conflicts_are_refused_naming_the_property() -> None:
    store = make_store(RecordingClient())
    store.upsert([make_record("a", metadata={"k": "text"})])
    with pytest.raises(StoreError, match=r"'meta_k' is text in the collection but this chunk has a number"):
        store.upsert([make_record("b", metadata={"k": 5})])
    with pytest.raises(StoreError, match=r"'meta_n'.*one type"):
        store.upsert([make_record("c", metadata={"n": 1}), make_record("d", metadata={"n": [1]})])


def test_wrong_vector_dimension_is_refused_before_anything_is_sent() -> None:
    client = RecordingClient()
    with pytest.raises(StoreError, match="'bad'"):
        make_store(client).upsert([make_record("ok"), make_record("bad", vector=[1.0, 0.0])])
    assert client.named("insert_many") == []


def test_rejected_objects_are_reported() -> None:
    client = RecordingClient()
    client.answers["insert_many"] = [
        types.SimpleNamespace(errors={1: types.SimpleNamespace(message="invalid")})
    ]
    with pytest.raises(StoreError, match=r"1 of 2 objects were rejected.*'b: invalid'"):
        make_store(client).upsert([make_record("a"), make_record("b")])


# ---------------------------------------------------------------------------------------- retries, errors
def _status_error(code: int) -> Exception:
    from weaviate.exceptions import UnexpectedStatusCodeError

    exc = UnexpectedStatusCodeError.__new__(UnexpectedStatusCodeError)
    Exception.__init__(exc, f"status {code}")
    exc._status_code = code  # type: ignore[attr-defined]
    return exc


def test_transient_errors_are_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    from weaviate.exceptions import WeaviateConnectionError

    sleeps: list[float] = []
    monkeypatch.setattr(store_mod.time, "sleep", sleeps.append)
    client = RecordingClient()
    client.answers["insert_many"] = [WeaviateConnectionError("reset"), _status_error(503), None]
    make_store(client).upsert([make_record("a")])
    assert len(client.named("insert_many")) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]  # exponential


def test_other_errors_are_not_retried() -> None:
    client = RecordingClient()
    client.answers["insert_many"] = [_status_error(422)]
    with pytest.raises(StoreError) as info:
        make_store(client).upsert([make_record("a")])
    assert not isinstance(info.value, StoreUnavailable) and len(client.named("insert_many")) == 1


def test_persistent_transient_error_is_store_unavailable_naming_the_url_not_the_key() -> None:
    from weaviate.exceptions import WeaviateConnectionError

    client = RecordingClient()
    client.answers["over_all"] = [WeaviateConnectionError("refused, key=wv-secret")] * (store_mod.RETRIES + 1)
    with pytest.raises(StoreUnavailable) as info:
        make_store(client, api_key="wv-secret").count()
    assert "http://wv.example:8080" in str(info.value) and "wv-secret" not in str(info.value)
    assert len(client.named("over_all")) == store_mod.RETRIES + 1


def test_unreachable_server_is_store_unavailable_naming_the_url() -> None:
    store = WeaviateStore("http://127.0.0.1:9", "cjkrag", grpc_port=9, api_key="wv-secret")
    with pytest.raises(StoreUnavailable) as info:
        store.warm_up()
    assert "http://127.0.0.1:9" in str(info.value) and "wv-secret" not in str(info.value)


# ---------------------------------------------------------------------------------------- queries
def test_acl_clause_is_inside_every_query() -> None:
    client = RecordingClient()
    store = make_store(client)
    acl = acl_filter(["user:bob", "group:team"])
    store.search_dense([0.5] * DIM, 4, acl)
    store.search_keyword(["首都", "東京"], 4, acl)
    store.count(acl)
    store.query(acl, ["doc_id"])
    requests = [client.named(n)[0][1] for n in ("near_vector", "bm25", "over_all", "fetch_objects")]
    for kwargs in requests:
        text = grpc(kwargs["filters"])
        assert text.count('property: "deny"') == 1 and text.count('property: "acl"') == 1
        assert "OPERATOR_NOT" in text and '"user:bob"' in text and '"group:team"' in text
    near = client.named("near_vector")[0]
    assert near[1]["target_vector"] == objects.VECTOR and near[1]["limit"] == 4
    bm25 = client.named("bm25")[0]
    assert bm25[0] == ("首都 東京",) and bm25[1]["query_properties"] == ["keywords"]


def test_deny_is_checked_against_every_held_principal_when_narrowed() -> None:
    text = grpc(store_mod.translate(acl_filter(["user:bob", "group:team"], narrow_to=["group:team"])))
    deny = text[text.index("OPERATOR_NOT") :]
    assert '"user:bob"' in deny and '"group:team"' in deny


@pytest.mark.parametrize("value", ['x" || public == true || "', "') or (1==1", "*", "a b", '{"$ne": 1}'])
def test_hostile_principals_stay_values(value: str) -> None:
    proto = _FilterToGRPC.convert(store_mod.translate(Condition("acl", "contains_any", [value])))
    assert proto.target.property == "acl" and list(proto.value_text_array.values) == [value]


def test_scores_follow_the_protocol() -> None:
    client = RecordingClient()
    client.answers["near_vector"] = [
        types.SimpleNamespace(objects=[obj("a", distance=0.1), obj("b", distance=1.2)])
    ]
    client.answers["bm25"] = [types.SimpleNamespace(objects=[obj("a", score=2.5), obj("b", score=0.0)])]
    store = make_store(client)
    dense = store.search_dense([0.5] * DIM, 2, None)
    assert [(h.chunk_id, round(h.score, 6)) for h in dense] == [("a", 0.9), ("b", -0.2)]  # cosine similarity
    keyword = store.search_keyword(["a"], 2, None)
    assert [(h.chunk_id, h.score) for h in keyword] == [("a", 2.5)]  # no zero-score hits
    assert keyword[0].fields["acl"] == ["group:all"] and keyword[0].fields["metadata"] == {}


def test_query_pages_with_a_chunk_id_keyset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "PAGE", 2)
    client = RecordingClient()
    client.answers["fetch_objects"] = [
        types.SimpleNamespace(objects=[obj("a", vector=[0.1] * DIM), obj("b", vector=[0.2] * DIM)]),
        types.SimpleNamespace(objects=[obj("c", vector=[0.3] * DIM)]),
    ]
    rows = make_store(client).query(Condition("tenant", "==", "t"), ["doc_id", "vector"], limit=10)
    assert [r["chunk_id"] for r in rows] == ["a", "b", "c"] and rows[2]["vector"] == [0.3] * DIM
    first, second = (kw for _, kw in client.named("fetch_objects"))
    assert "chunk_id" not in grpc(first["filters"]) and first["include_vector"] == [objects.VECTOR]
    text = grpc(second["filters"])
    assert 'property: "chunk_id"' in text and "OPERATOR_GREATER_THAN" in text and 'value_text: "b"' in text
    assert 'property: "tenant"' in text  # the caller's filter stays on every page


def test_out_of_order_pages_are_refused_rather_than_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "PAGE", 2)
    client = RecordingClient()
    client.answers["fetch_objects"] = [types.SimpleNamespace(objects=[obj("b"), obj("a")])]
    with pytest.raises(StoreError, match="out of order"):
        make_store(client).query(None, ["chunk_id"], limit=10)


def test_delete_by_ids_and_by_filter() -> None:
    client = RecordingClient()
    client.answers["delete_many"] = [
        types.SimpleNamespace(matches=2, successful=2, failed=0),
        types.SimpleNamespace(matches=0, successful=0, failed=0),
        types.SimpleNamespace(matches=3, successful=3, failed=0),
        types.SimpleNamespace(matches=0, successful=0, failed=0),
    ]
    store = make_store(client)
    store.delete(ids=["a", "b"])
    store.delete(filters=Condition("doc_id", "==", "d"))
    wheres = client.named("delete_many")
    assert len(wheres) == 4  # each delete repeats until nothing matches
    ids_text = grpc(wheres[0])
    assert objects.object_uuid("a") in ids_text and objects.object_uuid("b") in ids_text
    assert 'property: "doc_id"' in grpc(wheres[2])
    with pytest.raises(StoreError, match="ids or filters"):
        store.delete()


def test_close_releases_the_client() -> None:
    client = RecordingClient()
    store = make_store(client)
    store.close()
    assert client.closed


@pytest.mark.parametrize(
    ("version", "ok"), [("1.32.2", False), ("1.33.0", True), ("1.34.1-rc.0", True), ("2.0.0", True), (None, True)]
)
def test_servers_without_the_not_operator_are_refused(version: str | None, ok: bool) -> None:
    problem = objects.server_problem(version)
    assert (problem is None) is ok
    if not ok:
        assert "Not filter operator" in str(problem) and ">= 1.33" in str(problem)
