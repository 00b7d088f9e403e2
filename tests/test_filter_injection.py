"""Injection corpus: every value / principal either matches exactly the records holding that very string, or
is refused with FilterError; it never widens a filter. Milvus Lite and Qdrant (local mode) run the filters
for real (Qdrant also through QdrantStore on qdrant-edge-py and local mode; Weaviate through WeaviateStore when
WEAVIATE_URL is set); for Weaviate and Elasticsearch the value must sit in the translation as a value, never as syntax."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cjkrag.connectors.filters import (
    Condition,
    Logical,
    acl_filter,
    evaluate,
    parse_filter,
    validate_principal,
)
from cjkrag.connectors.milvus.filters import escape_string_literal, to_expression
from cjkrag.errors import FilterError
from tests.test_filter_translators import LiteCollection

CORPUS = [
    '"', "'", "\\", '\\"', "\\'", "\\\\", "a\\", ") or (1==1", '"] or true or ["', "' or '1'='1", '" or "1"=="1',
    'x" || public == true || "', "x' || public == true || '", "\n", "\r\n", "\r", "\t", "a\tb", "\x00", "a\x00b",
    "a" * 4000, "中" * 4000, "\u202e", "\u202eevil\u202c", "👩\u200d💻", "{p0}", "{p1}", "{}", "%s", "%(p0)s", "$1",
    "${x}", "\u201c\u201d\u2018\u2019", "\uff02", "\\n", "\\t", "\\u0041", "\\U0001F600", "\\x41", "\\101", "`",
    "\u2028", "\u2029", "\x7f", "\x01", "\x1b[31m", "\u0085", "\ufeff", "", " ", "true", "1", "null", "[]", '{"a": 1}',
    'metadata["cat"]', "chunk_id", "*", "%", "_", "a%", "?", "/* */", "-- ", ";", "中文", "한국어", "日本語",
]  # fmt: skip
DECOYS = ["x", "a", "1", "public", "u1"]


def principal_ok(value: str) -> bool:
    """A principal that is valid and already in normal form (ingestion stores principals normalized, so
    the raw records here hold normal forms only for these; normalization itself: tests/test_principals.py)."""
    try:
        normal = validate_principal(value)
    except FilterError:
        return False
    return normal == value and len(value.encode("utf-8")) <= 256  # the test collection's ARRAY element limit


def make_records() -> list[dict[str, Any]]:
    """One private record per corpus string (as title, doc_id, metadata and principal), plus decoys."""
    records: list[dict[str, Any]] = []
    values = [v for v in dict.fromkeys(CORPUS + DECOYS) if "\x00" not in v]
    for i, v in enumerate(values):
        records.append(
            {"chunk_id": f"v{i:03d}", "doc_id": v, "title": v, "tenant": "", "language": "", "start": i, "end": i,
             "chunk_index": 0, "public": False, "acl": [v] if principal_ok(v) else ["owner"], "deny": [],
             "metadata": {"cat": v, "tags": [v, "shared"]}}
        )  # fmt: skip
    principals = [v for v in values if principal_ok(v)]
    for k in range(0, len(principals), 16):  # public, but denying every corpus principal (16 per record)
        records.append(
            {"chunk_id": f"deny-{k}", "doc_id": "d", "title": "t", "tenant": "", "language": "", "start": 0, "end": 0,
             "chunk_index": 0, "public": True, "acl": [], "deny": principals[k : k + 16], "metadata": {}}
        )  # fmt: skip
    records.append(
        {"chunk_id": "public", "doc_id": "p", "title": "p", "tenant": "", "language": "", "start": 0, "end": 0,
         "chunk_index": 0, "public": True, "acl": [], "deny": [], "metadata": {}}
    )  # fmt: skip
    return records


RECORDS = make_records()


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteCollection]:
    coll = LiteCollection(tmp_path_factory.mktemp("inject") / "i.db", RECORDS)
    yield coll
    coll.client.close()


def value_filters(v: str) -> list[tuple[str, Any]]:
    return [
        ("==", Condition("title", "==", v)),
        ("!=", Condition("doc_id", "!=", v)),
        ("in", Condition("title", "in", (v, "x"))),
        ("not in", Condition("title", "not in", (v,))),
        ("meta ==", Condition("metadata.cat", "==", v)),
        ("meta contains_any", Condition("metadata.tags", "contains_any", (v,))),
        ("NOT meta ==", Logical("NOT", (Condition("metadata.cat", "==", v),))),
        (">=", Condition("title", ">=", v)),
    ]


@pytest.mark.parametrize("value", CORPUS, ids=lambda v: ascii(v)[:40])
def test_milvus_lite_values_match_exactly_or_are_refused(lite: LiteCollection, value: str) -> None:
    for name, node in value_filters(value):
        try:
            checked = parse_filter(node)
            expr = to_expression(checked, lite=True, array_capacity=16)
        except FilterError as exc:
            assert "\x00" in value or "\n" in value or "\r" in value, (name, exc)
            continue
        assert lite.ids(expr) == lite.expected(checked), (name, expr[:200])
    if value in ("\n", "\r\n", "\r", "\x00", "a\x00b"):  # refused, never turned into something else
        with pytest.raises(FilterError):
            to_expression(parse_filter(Condition("title", "==", value)), lite=True)


@pytest.mark.parametrize("principal", [v for v in CORPUS if principal_ok(v)], ids=lambda v: ascii(v)[:40])
def test_milvus_lite_principals_see_only_what_they_may(lite: LiteCollection, principal: str) -> None:
    access = acl_filter([principal])
    got = set(lite.ids(to_expression(access, lite=True, array_capacity=16)))
    rule = {
        r["chunk_id"]
        for r in RECORDS
        if (r["public"] or principal in r["acl"]) and principal not in r["deny"]
    }
    assert got == rule and "public" in got
    assert not any(principal in r["deny"] for r in RECORDS if r["chunk_id"] in got)  # deny wins
    assert all(r["public"] or principal in r["acl"] for r in RECORDS if r["chunk_id"] in got)
    assert got == set(lite.expected(access))


def principal_valid(value: str) -> bool:
    try:
        validate_principal(value)
    except FilterError:
        return False
    return True


@pytest.mark.parametrize("principal", [v for v in CORPUS if not principal_valid(v)], ids=lambda v: ascii(v)[:40])
def test_bad_principals_are_refused(principal: str) -> None:
    if len(principal.encode("utf-8")) > 256 and len(principal) <= 256:
        pytest.skip("valid principal, only too long for the test collection's element size")
    with pytest.raises(FilterError):
        acl_filter([principal])


def test_widening_principal_sees_public_only(lite: LiteCollection) -> None:
    for p in ['x" || public == true || "', "') or (1==1", '"] or true or ["', "' or '1'='1"]:
        got = lite.ids(to_expression(acl_filter([p]), lite=True, array_capacity=16))
        private = [r["chunk_id"] for r in RECORDS if not r["public"] and p not in r["acl"]]
        assert not set(got) & set(private)
        assert "public" in got


@pytest.mark.parametrize("value", [v for v in CORPUS if "\x00" not in v], ids=lambda v: ascii(v)[:40])
def test_escape_string_literal_is_one_literal(value: str) -> None:
    if "\n" in value or "\r" in value:
        with pytest.raises(FilterError, match="line breaks"):
            escape_string_literal(value)
        return
    text = escape_string_literal(value)
    assert text.startswith('"') and text.endswith('"')
    inner = re.sub(r"\\.", "", text[1:-1], flags=re.S)  # drop escape pairs: no bare quote or backslash left
    assert '"' not in inner and "\\" not in inner and "'" not in inner
    decoded = re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.S)  # what Milvus reads back
    assert decoded == value


def test_nul_is_refused_everywhere() -> None:
    for node in (Condition("title", "==", "a\x00"), Condition("acl", "contains_any", ("a\x00",))):
        with pytest.raises(FilterError, match="NUL"):
            parse_filter(node, limits=False)
    with pytest.raises(FilterError):
        validate_principal("a\x00")
    with pytest.raises(FilterError):
        escape_string_literal("a\x00")


# ------------------------------------------------------------------------------------------ Qdrant (local)
@pytest.fixture(scope="module")
def qdrant_local() -> Iterator[Any]:
    from qdrant_client import QdrantClient
    from qdrant_client import models as m

    client = QdrantClient(":memory:")
    client.create_collection("i", vectors_config=m.VectorParams(size=2, distance=m.Distance.COSINE))
    client.upsert("i", [m.PointStruct(id=i, vector=[1.0, 0.5], payload=r) for i, r in enumerate(RECORDS)])
    yield client
    client.close()


@pytest.mark.parametrize("value", [v for v in CORPUS if "\x00" not in v], ids=lambda v: ascii(v)[:40])
def test_qdrant_values_are_values(qdrant_local: Any, value: str) -> None:
    from qdrant_client import models as m

    from cjkrag.connectors.qdrant.filters import translate

    assert translate(Condition("title", "==", value)) == m.Filter(
        must=[m.FieldCondition(key="title", match=m.MatchValue(value=value))]
    )
    nodes = [node for name, node in value_filters(value) if name != ">="]  # Qdrant: no string ranges
    if principal_ok(value):
        nodes.append(acl_filter([value]))
    for node in nodes:
        got = [p.id for p in qdrant_local.scroll("i", scroll_filter=translate(node), limit=1000)[0]]
        assert sorted(got) == [i for i, r in enumerate(RECORDS) if evaluate(node, r)], node


@pytest.fixture(scope="module", params=["edge", "local"])
def qdrant_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The same records through QdrantStore, on qdrant-edge-py and on qdrant-client's local mode."""
    from cjkrag.connectors.qdrant.store import QdrantStore
    from cjkrag.types import ChunkRecord

    pytest.importorskip("qdrant_edge" if request.param == "edge" else "qdrant_client")
    store = QdrantStore("inject", mode=request.param, path=tmp_path_factory.mktemp(f"inject-{request.param}"))
    store.ensure_collection(2)
    store.upsert(
        [ChunkRecord(text="t", vector=[1.0, 0.5], keywords=["t"], doc_hash="h", **r) for r in RECORDS]
    )
    yield store
    store.close()


@pytest.mark.parametrize("value", [v for v in CORPUS if "\x00" not in v], ids=lambda v: ascii(v)[:40])
def test_qdrant_store_values_are_values(qdrant_store: Any, value: str) -> None:
    nodes = [node for name, node in value_filters(value) if name != ">="]  # Qdrant: no string ranges
    if principal_ok(value):
        nodes.append(acl_filter([value]))
    for node in nodes:
        got = sorted(str(r["chunk_id"]) for r in qdrant_store.query(node, ["chunk_id"]))
        assert got == sorted(str(r["chunk_id"]) for r in RECORDS if evaluate(node, r)), node


# ------------------------------------------------------------------------------------------ Weaviate / ES
@pytest.mark.parametrize("value", [v for v in CORPUS if "\x00" not in v], ids=lambda v: ascii(v)[:40])
def test_weaviate_values_are_values(value: str) -> None:
    from weaviate.collections.filters import _FilterToGRPC

    from cjkrag.connectors.weaviate.filters import translate

    proto = _FilterToGRPC.convert(translate(Condition("title", "==", value)))
    assert proto.target.property == "title" and proto.value_text == value
    proto = _FilterToGRPC.convert(translate(Condition("metadata.cat", "contains_any", (value, "x"))))
    assert proto.target.property == "meta_cat" and list(proto.value_text_array.values) == [value, "x"]
    if principal_ok(value):
        text = str(_FilterToGRPC.convert(translate(acl_filter([value]))))
        assert text.count('property: "acl"') == 1 and text.count('property: "deny"') == 1


@pytest.fixture(scope="module")
def weaviate_store() -> Iterator[Any]:
    """The same records through WeaviateStore on a Weaviate server (WEAVIATE_URL); skipped without one."""
    url = os.environ.get("WEAVIATE_URL")
    if not url:
        pytest.skip("WEAVIATE_URL is not set: no Weaviate server to run against (start it with docker compose)")
    from cjkrag.connectors.weaviate.store import WeaviateStore
    from cjkrag.types import ChunkRecord

    store = WeaviateStore(url, f"Inject_{uuid.uuid4().hex[:10]}", api_key=os.environ.get("WEAVIATE_API_KEY"),
                          grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")))
    store.ensure_collection(2)
    store.upsert(
        [ChunkRecord(text="t", vector=[1.0, 0.5], keywords=["t"], doc_hash="h", **r) for r in RECORDS]
    )
    yield store
    store.drop_collection()
    store.close()


@pytest.mark.parametrize("value", [v for v in CORPUS if "\x00" not in v], ids=lambda v: ascii(v)[:40])
def test_weaviate_store_values_are_values(weaviate_store: Any, value: str) -> None:
    nodes = [node for _, node in value_filters(value)]
    if principal_ok(value):
        nodes.append(acl_filter([value]))
    for node in nodes:
        got = sorted(str(r["chunk_id"]) for r in weaviate_store.query(node, ["chunk_id"]))
        assert got == sorted(str(r["chunk_id"]) for r in RECORDS if evaluate(node, r)), node


ES_KEYS = {"bool", "filter", "should", "must_not", "minimum_should_match", "term", "terms", "range", "exists",
           "field", "gt", "gte", "lt", "lte", "title", "doc_id", "acl", "deny", "public", "metadata.cat",
           "metadata.tags"}  # fmt: skip


def es_keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in es_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in es_keys(v)}
    return set()


@pytest.mark.parametrize("value", [v for v in CORPUS if "\x00" not in v], ids=lambda v: ascii(v)[:40])
def test_elasticsearch_values_are_values(value: str) -> None:
    from cjkrag.connectors.elasticsearch.filters import translate

    assert translate(Condition("title", "==", value)) == {"bool": {"filter": [{"term": {"title": value}}]}}
    nodes = [node for _, node in value_filters(value)]
    if principal_ok(value):
        nodes.append(acl_filter([value]))
    for node in nodes:
        query = translate(node)
        assert es_keys(query) <= ES_KEYS  # the value never became a key (a field or an operator)
        assert json.loads(json.dumps(query)) == query  # plain JSON: no object ES would parse as syntax
