"""Backend-agnostic tests of the ``VectorStore`` protocol (``connectors/protocol.py``).

A backend's test class subclasses :class:`StoreConformance` and provides one fixture, ``make_store``: a
function returning a new, not yet connected store on one fresh collection (every call: the same collection
and location, so a second call re-opens what the first wrote). The mixin builds ``store`` from it (warmed
up, dropped and closed after the test).

    class TestMilvus(StoreConformance):
        @pytest.fixture
        def make_store(self, tmp_path) -> Callable[[], VectorStore]: ...

``bm25_avgdl``: None when the backend computes BM25 with the collection's real average length (Milvus,
Elasticsearch, Weaviate), or the fixed average the backend was configured with (Qdrant).

Vectors are tiny (``DIM``) and hand-built; expected rankings are computed here with a reference cosine
and a reference BM25 (Lucene's formula, k1=1.2, b=0.75), never hard-coded.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from cjkrag.connectors.filters import Condition, Logical
from cjkrag.connectors.protocol import VectorStore
from cjkrag.errors import FilterError, StoreError
from cjkrag.types import ChunkRecord

DIM = 8

# The hand-built CJK keyword lists of the brief (analyzer output: one token per item).
CJK_DOCS: dict[str, list[str]] = {
    "zh-beijing": ["北京", "首都", "中国"],
    "ja-tokyo": ["東京", "日本", "首都"],
    "ja-search": ["検索", "エンジン"],
    "ko-seoul": ["서울", "수도"],
    "zh-split": ["东", "京", "城市"],
    "en-filler": ["vector", "database", "search"],
}


def make_record(
    chunk_id: str,
    *,
    vector: Any = None,
    keywords: list[str] | None = None,
    doc_id: str | None = None,
    acl: list[str] | None = None,
    deny: list[str] | None = None,
    public: bool = False,
    metadata: dict[str, Any] | None = None,
    text: str | None = None,
    title: str = "",
    tenant: str = "",
    language: str = "",
    chunk_index: int = 0,
    doc_hash: str = "hash0",
) -> ChunkRecord:
    keywords = list(keywords) if keywords is not None else [chunk_id]
    text = text if text is not None else "".join(keywords)
    vec = [float(x) for x in (vector if vector is not None else _unit(chunk_id))]
    return ChunkRecord(
        chunk_id=chunk_id,
        doc_id=doc_id if doc_id is not None else f"doc-{chunk_id}",
        text=text,
        start=0,
        end=len(text),
        chunk_index=chunk_index,
        title=title,
        acl=list(acl) if acl is not None else ["group:all"],
        deny=list(deny or []),
        public=public,
        metadata=dict(metadata or {}),
        vector=vec,
        keywords=keywords,
        doc_hash=doc_hash,
        tenant=tenant,
        language=language,
    )


def _unit(seed_text: str) -> list[float]:
    rng = np.random.default_rng(zlib.crc32(seed_text.encode("utf-8")))
    v = rng.normal(size=DIM)
    return list(v / np.linalg.norm(v))


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_bm25(
    docs: dict[str, list[str]],
    query: list[str],
    k1: float = 1.2,
    b: float = 0.75,
    avgdl: float | None = None,
) -> dict[str, float]:
    """Lucene BM25 of every doc with a positive score (``avgdl``: the real average unless given)."""
    n = len(docs)
    if avgdl is None:
        avgdl = sum(len(t) for t in docs.values()) / n
    df = Counter(term for tokens in docs.values() for term in set(tokens))
    scores: dict[str, float] = {}
    for cid, tokens in docs.items():
        tf = Counter(tokens)
        s = 0.0
        for term in query:
            if tf[term]:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                s += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(tokens) / avgdl))
        if s > 0:
            scores[cid] = s
    return scores


def visible_to(*principals: str) -> Logical:
    """The ACL pre-filter the pipeline builds: public, or an allowed principal, and no denied one."""
    return Logical(
        "AND",
        (
            Logical(
                "OR",
                (Condition("public", "==", True), Condition("acl", "contains_any", list(principals))),
            ),
            Logical("NOT", (Condition("deny", "contains_any", list(principals)),)),
        ),
    )


class StoreConformance:
    """Mix into a ``Test...`` class that provides the ``make_store`` fixture."""

    bm25_avgdl: float | None = None
    #: Qdrant's Rust engine keeps a deleted point in its segment's term statistics until the segment is
    #: vacuumed (by default once 20% of a segment of 1000+ points is deleted): IDF lags deletes until then
    idf_counts_deleted_until_vacuum: bool = False
    #: filters the backend refuses with a FilterError (documented limits; never silently ignored)
    refused_filters: tuple[str, ...] = ()

    @pytest.fixture
    def store(self, make_store: Callable[[], VectorStore]) -> Iterator[VectorStore]:
        s = make_store()
        s.warm_up()
        yield s
        s.drop_collection()
        s.close()

    # -- basics ----------------------------------------------------------------------------------
    def test_satisfies_protocol(self, store: VectorStore) -> None:
        assert isinstance(store, VectorStore)

    def test_upsert_count_query_delete_round_trip(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        assert store.count() == 0
        records = [make_record(f"a{i}", doc_id="doc-a", chunk_index=i, doc_hash="ha") for i in range(3)]
        records += [make_record(f"b{i}", doc_id="doc-b", chunk_index=i, doc_hash="hb") for i in range(2)]
        store.upsert(records)
        assert store.count() == 5
        assert store.count(Condition("doc_id", "==", "doc-a")) == 3

        rows = store.query(Condition("doc_id", "==", "doc-b"), ["doc_id", "chunk_id", "doc_hash"])
        assert sorted(str(r["chunk_id"]) for r in rows) == ["b0", "b1"]
        assert all(r["doc_id"] == "doc-b" and r["doc_hash"] == "hb" for r in rows)

        store.delete(ids=["a0", "missing-id"])
        assert store.count() == 4
        assert store.query(Condition("chunk_id", "==", "a0"), ["chunk_id"]) == []

        store.delete(filters=Condition("doc_id", "in", ["doc-b"]))
        assert store.count() == 2
        assert sorted(str(r["chunk_id"]) for r in store.query(None, ["chunk_id"])) == ["a1", "a2"]

    def test_query_returns_only_requested_fields(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert([make_record("q1", doc_id="d-q", title="标题", metadata={"k": "v"})])
        rows = store.query(Condition("doc_id", "==", "d-q"), ["doc_id", "title"])
        assert len(rows) == 1
        assert set(rows[0]) <= {"chunk_id", "doc_id", "title"}
        assert rows[0]["title"] == "标题" and rows[0]["doc_id"] == "d-q"

    def test_query_and_count_with_no_match(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert([make_record("n1")])
        assert store.query(Condition("doc_id", "==", "no-such-doc"), ["chunk_id", "doc_hash"]) == []
        assert store.count(Condition("doc_id", "==", "no-such-doc")) == 0

    def test_upsert_is_idempotent_by_chunk_id(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert([make_record("u1", text="旧的文本", doc_hash="h1")])
        store.upsert([make_record("u1", text="新的文本", doc_hash="h2")])
        store.upsert([make_record("u1", text="新的文本", doc_hash="h2")])
        assert store.count() == 1
        rows = store.query(Condition("chunk_id", "==", "u1"), ["text", "doc_hash"])
        assert rows == [{"chunk_id": "u1", "text": "新的文本", "doc_hash": "h2"}]

    def test_hit_fields_round_trip(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        rec = make_record(
            "f1",
            doc_id="doc-f",
            text="東京は日本の首都です。",
            title='タイトル "quoted" \\ back',
            acl=["user:alice", "group:研究"],
            deny=["user:mallory"],
            public=True,
            metadata={"category": "地理", "year": 2024, "tags": ["a", "b"]},
            tenant="acme",
            language="ja",
            chunk_index=2,
            doc_hash="abc123",
        )
        store.upsert([rec])
        [hit] = store.search_dense(rec.vector, 5, None)
        assert hit.chunk_id == "f1"
        expected = {
            "doc_id": "doc-f",
            "text": rec.text,
            "title": rec.title,
            "start": 0,
            "end": len(rec.text),
            "chunk_index": 2,
            "acl": ["user:alice", "group:研究"],
            "deny": ["user:mallory"],
            "public": True,
            "tenant": "acme",
            "language": "ja",
            "metadata": {"category": "地理", "year": 2024, "tags": ["a", "b"]},
            "doc_hash": "abc123",
        }
        assert {k: hit.fields.get(k) for k in expected} == expected

    # -- dense ---------------------------------------------------------------------------------------
    def test_dense_ranking_follows_cosine(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        rng = np.random.default_rng(7)
        vectors = {f"v{i}": rng.normal(size=DIM) for i in range(20)}
        store.upsert([make_record(cid, vector=v) for cid, v in vectors.items()])
        query = rng.normal(size=DIM)
        expected = sorted(vectors, key=lambda c: -cosine(vectors[c], query))[:5]
        hits = store.search_dense(list(query), 5, None)
        assert [h.chunk_id for h in hits] == expected
        for h in hits:
            assert h.score == pytest.approx(cosine(vectors[h.chunk_id], query), abs=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    def test_dense_wrong_dimension_is_an_error(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert([make_record("d1")])
        with pytest.raises(StoreError):
            store.search_dense([1.0] * (DIM + 1), 3, None)
        with pytest.raises(StoreError, match="d2"):
            store.upsert([make_record("d2", vector=[1.0] * (DIM - 1))])

    def test_ensure_collection_with_other_dimension_fails(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.ensure_collection(DIM)  # idempotent
        with pytest.raises(StoreError, match="dimension"):
            store.ensure_collection(DIM * 2)

    def test_drop_collection(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert([make_record("x1"), make_record("x2")])
        store.drop_collection()
        assert store.count() == 0
        store.ensure_collection(DIM)
        assert store.count() == 0

    # -- keyword (BM25) ---------------------------------------------------------------------------
    def _cjk(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert([make_record(cid, keywords=kw) for cid, kw in CJK_DOCS.items()])

    def test_keyword_single_cjk_terms_hit_the_right_chunks(self, store: VectorStore) -> None:
        self._cjk(store)
        for term in ["首都", "東京", "検索", "수도"]:
            hits = store.search_keyword([term], 10, None)
            holders = {cid for cid, kw in CJK_DOCS.items() if term in kw}
            assert {h.chunk_id for h in hits} == holders, term
            scores = [h.score for h in hits]
            assert all(s > 0 for s in scores), term
            assert scores == sorted(scores, reverse=True), term

    def test_keyword_tokens_are_not_resplit(self, store: VectorStore) -> None:
        self._cjk(store)
        # "东京" is one token; the chunk holding "东" and "京" separately must not match it
        assert store.search_keyword(["东京"], 10, None) == []
        assert [h.chunk_id for h in store.search_keyword(["东"], 10, None)] == ["zh-split"]

    def test_keyword_ranking_follows_bm25(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        rng = np.random.default_rng(3)
        vocab = ["東京", "首都", "検索", "서울", "中国", "日本", "引擎", "数据", "向量", "文本"]
        docs = {
            f"k{i}": [str(t) for t in rng.choice(vocab, size=int(rng.integers(2, 9)), p=None)]
            for i in range(30)
        }
        store.upsert([make_record(cid, keywords=kw) for cid, kw in docs.items()])
        for query in (["首都"], ["東京", "検索"], ["서울", "数据", "文本"]):
            ref = reference_bm25(docs, query, avgdl=self.bm25_avgdl)
            hits = store.search_keyword(query, 30, None)
            assert {h.chunk_id for h in hits} == set(ref), query
            got = [ref[h.chunk_id] for h in hits]  # reference scores in the store's order
            assert all(a >= b - 1e-6 for a, b in itertools.pairwise(got)), query

    def test_keyword_multi_term_prefers_chunks_matching_more_terms(self, store: VectorStore) -> None:
        self._cjk(store)
        hits = store.search_keyword(["首都", "中国"], 10, None)
        assert hits[0].chunk_id == "zh-beijing"
        assert {h.chunk_id for h in hits} == {"zh-beijing", "ja-tokyo"}

    def test_keyword_empty_terms(self, store: VectorStore) -> None:
        self._cjk(store)
        assert store.search_keyword([], 10, None) == []

    # -- filters are pushed down (pre-filter) ------------------------------------------------------
    def _visibility_corpus(self, store: VectorStore) -> tuple[np.ndarray, dict[str, np.ndarray], set[str]]:
        """40 invisible chunks closest to the query (and richest in the term), 6 visible ones far from it."""
        store.ensure_collection(DIM)
        rng = np.random.default_rng(11)
        query = rng.normal(size=DIM)
        vectors: dict[str, np.ndarray] = {}
        records = []
        for i in range(40):
            v = query + 0.05 * rng.normal(size=DIM)
            vectors[f"hidden{i}"] = v
            records.append(
                make_record(f"hidden{i}", vector=v, keywords=["秘密", "秘密", "秘密"], acl=["group:secret"])
            )
        visible = set()
        for i in range(6):
            v = rng.normal(size=DIM)
            cid = f"vis{i}"
            vectors[cid] = v
            visible.add(cid)
            filler = [f"填充{j}" for j in range(i + 1)]
            records.append(
                make_record(
                    cid,
                    vector=v,
                    keywords=["秘密", *filler],
                    acl=["group:team"] if i < 4 else [],
                    public=i >= 4,
                )
            )
        store.upsert(records)
        return query, vectors, visible

    def test_dense_prefilter_returns_top_k_visible(self, store: VectorStore) -> None:
        query, vectors, visible = self._visibility_corpus(store)
        hits = store.search_dense(list(query), 4, visible_to("group:team", "user:bob"))
        expected = sorted(visible, key=lambda c: -cosine(vectors[c], query))[:4]
        assert [h.chunk_id for h in hits] == expected  # a post-filter of the top 4 would return nothing

    def test_keyword_prefilter_returns_top_k_visible(self, store: VectorStore) -> None:
        _, _, visible = self._visibility_corpus(store)
        hits = store.search_keyword(["秘密"], 4, visible_to("group:team", "user:bob"))
        assert len(hits) == 4
        assert {h.chunk_id for h in hits} <= visible
        # shorter visible chunks (fewer filler tokens) score higher with BM25
        assert [h.chunk_id for h in hits] == ["vis0", "vis1", "vis2", "vis3"]

    def test_deny_and_public_filters(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert(
            [
                make_record("open", keywords=["共有"], public=True, acl=[]),
                make_record("team", keywords=["共有"], acl=["group:team"]),
                make_record("team-deny-bob", keywords=["共有"], acl=["group:team"], deny=["user:bob"]),
                make_record("other", keywords=["共有"], acl=["group:other"]),
            ]
        )
        bob = {h.chunk_id for h in store.search_keyword(["共有"], 10, visible_to("user:bob", "group:team"))}
        assert bob == {"open", "team"}
        anon = {h.chunk_id for h in store.search_keyword(["共有"], 10, visible_to("user:anon"))}
        assert anon == {"open"}
        assert store.count(visible_to("user:eve", "group:other")) == 2

    def test_metadata_filter(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert(
            [
                make_record("m1", keywords=["地理"], metadata={"category": "地理", "year": 2020}),
                make_record("m2", keywords=["地理"], metadata={"category": "歴史", "year": 2024}),
                make_record("m3", keywords=["地理"], metadata={"year": 2023}),
            ]
        )
        hits = store.search_keyword(["地理"], 10, Condition("metadata.category", "==", "地理"))
        assert [h.chunk_id for h in hits] == ["m1"]
        assert store.count(Condition("metadata.year", ">=", 2023)) == 2

    def test_reupsert_with_changed_acl_takes_effect_immediately(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        rec = make_record("acl1", keywords=["機密"], acl=["group:a"])
        store.upsert([rec, make_record("acl-other", keywords=["機密"], acl=["group:z"])])
        assert [h.chunk_id for h in store.search_keyword(["機密"], 5, visible_to("group:a"))] == ["acl1"]
        rec.acl = ["group:b"]
        store.upsert([rec])
        assert store.search_keyword(["機密"], 5, visible_to("group:a")) == []
        assert store.search_dense(rec.vector, 5, visible_to("group:a")) == []
        assert [h.chunk_id for h in store.search_keyword(["機密"], 5, visible_to("group:b"))] == ["acl1"]

    def test_delete_by_filter_leaves_others(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        store.upsert([make_record(f"t{i}", tenant="acme" if i % 2 else "other") for i in range(6)])
        store.delete(filters=Condition("tenant", "==", "acme"))
        rows = store.query(None, ["tenant"])
        assert sorted(str(r["chunk_id"]) for r in rows) == ["t0", "t2", "t4"]
        assert {r["tenant"] for r in rows} == {"other"}

    def test_keyword_scores_equal_reference_bm25(self, store: VectorStore) -> None:
        self._cjk(store)
        for query in (["首都"], ["東京"], ["首都", "中国"], ["수도", "검색"], ["首都", "首都"]):
            ref = reference_bm25(CJK_DOCS, query, avgdl=self.bm25_avgdl)
            hits = store.search_keyword(query, 10, None)
            assert {h.chunk_id for h in hits} == set(ref), query
            for h in hits:
                assert h.score == pytest.approx(ref[h.chunk_id], rel=2e-3), (query, h.chunk_id)

    def test_keyword_idf_follows_deletes(self, store: VectorStore) -> None:
        self._cjk(store)
        store.delete(ids=["zh-beijing"])  # 首都 is now in one chunk of five: a higher IDF
        docs = {k: v for k, v in CJK_DOCS.items() if k != "zh-beijing"}
        if self.idf_counts_deleted_until_vacuum:
            docs = CJK_DOCS  # the deleted chunk is never returned, but still counts in df and N
        [hit] = store.search_keyword(["首都"], 10, None)  # the deleted chunk is gone either way
        assert hit.chunk_id == "ja-tokyo"
        expected = reference_bm25(docs, ["首都"], avgdl=self.bm25_avgdl)["ja-tokyo"]
        assert hit.score == pytest.approx(expected, rel=2e-3)

    # -- collections, empty, unicode, sizes, persistence ------------------------------------------
    def test_empty_and_missing_collection(self, store: VectorStore) -> None:
        assert store.count() == 0  # not created yet: reads are empty, not errors
        assert store.search_dense(_unit("x"), 3, None) == []
        assert store.search_keyword(["首都"], 3, None) == []
        assert store.query(None, ["chunk_id"]) == []
        with pytest.raises(StoreError, match="ensure_collection"):
            store.upsert([make_record("early")])
        store.ensure_collection(DIM)
        assert store.count() == 0
        assert store.search_dense(_unit("x"), 3, visible_to("group:all")) == []
        assert store.search_keyword(["首都"], 3, visible_to("group:all")) == []

    def test_unicode_and_large_payloads_round_trip(self, store: VectorStore) -> None:
        store.ensure_collection(DIM)
        text = ('東京は日本の首都です。🗼 한국어 텍스트 \\ "quoted" \u200b\t\n' * 1500)[:30000]
        meta = {"注释": "値 \" ' \\ 🙂", "nested": {"深い": [1, 2.5, "三"]}, "flag": True}
        store.upsert(
            [make_record("大きい-🙂", text=text, title="題名 🙂", metadata=meta, keywords=["東京", "🗼"])]
        )
        [row] = store.query(Condition("chunk_id", "==", "大きい-🙂"), ["text", "title", "metadata"])
        assert row["text"] == text and row["title"] == "題名 🙂" and row["metadata"] == meta
        assert [h.chunk_id for h in store.search_keyword(["🗼"], 3, None)] == ["大きい-🙂"]
        assert store.count(Condition("metadata.flag", "==", True)) == 1
        assert store.count(Condition("metadata.flag", "!=", True)) == 0

    def test_create_twice_is_safe_and_data_survives_reopen(
        self, store: VectorStore, make_store: Callable[[], VectorStore]
    ) -> None:
        store.ensure_collection(DIM)
        store.upsert([make_record(cid, keywords=kw) for cid, kw in CJK_DOCS.items()])
        store.ensure_collection(DIM)  # again: nothing lost
        assert store.count() == len(CJK_DOCS)
        store.close()
        again = make_store()
        try:
            again.warm_up()
            again.ensure_collection(DIM)
            assert again.count() == len(CJK_DOCS)
            assert [h.chunk_id for h in again.search_keyword(["東京"], 5, None)] == ["ja-tokyo"]
            with pytest.raises(StoreError, match="dimension") as info:
                again.ensure_collection(DIM + 3)
            assert str(DIM) in str(info.value) and str(DIM + 3) in str(info.value)  # both values named
        finally:
            again.close()
        store.warm_up()  # the fixture drops the collection through the first store

    def test_every_filter_operator_matches_the_reference(self, store: VectorStore) -> None:
        from cjkrag.connectors.filters import evaluate

        store.ensure_collection(DIM)
        records = [
            make_record(
                "o1", tenant="a", metadata={"k": "x", "n": 1, "b": True, "tags": ["p", "q"]}, chunk_index=1
            ),
            make_record(
                "o2", tenant="b", metadata={"k": "y", "n": 2.5, "b": False, "tags": ["q"]}, chunk_index=2
            ),
            make_record("o3", tenant="", metadata={"n": 10}, public=True, acl=[], chunk_index=3),
            make_record("o4", tenant="a", metadata={"k": "x"}, acl=["group:a", "user:u"], deny=["user:v"]),
        ]
        store.upsert(records)
        filters = [
            Condition("tenant", "==", "a"),
            Condition("tenant", "!=", "a"),
            Condition("tenant", "in", ["a", "b"]),
            Condition("tenant", "not in", ["a"]),
            Condition("metadata.k", "==", "x"),
            Condition("metadata.k", "!=", "x"),
            Condition("metadata.n", ">", 1),
            Condition("metadata.n", ">=", 2.5),
            Condition("metadata.n", "<", 10),
            Condition("metadata.n", "<=", 1),
            Condition("metadata.b", "==", False),
            Condition("metadata.tags", "contains_any", ["p"]),
            Condition("metadata.k", "exists", True),
            Condition("metadata.k", "exists", False),
            Condition("chunk_index", "in", [1, 3]),
            Condition("public", "==", True),
            Condition("public", "!=", True),
            Condition("acl", "contains_any", ["user:u", "group:zzz"]),
            Condition("deny", "contains_any", ["user:v"]),
            Logical("NOT", (Condition("deny", "contains_any", ["user:v"]),)),
            Logical("OR", (Condition("tenant", "==", "b"), Condition("metadata.n", ">", 5))),
            visible_to("user:u"),
            visible_to("user:v", "group:a"),
        ]
        by_id = {r.chunk_id: r for r in records}
        for f in filters:
            if str(f) in self.refused_filters:
                with pytest.raises(FilterError):
                    store.query(f, ["chunk_id"])
                continue
            expected = {cid for cid, r in by_id.items() if evaluate(f, r.as_filterable())}
            got = {str(r["chunk_id"]) for r in store.query(f, ["chunk_id"])}
            assert got == expected, f
            assert store.count(f) == len(expected), f
