"""The query pipeline over real Milvus Lite with the real CJK analyzer (FakeEmbedder for the dense side)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from cjkrag.errors import ConfigError, FilterError

DOCS = [
    {"id": "zh", "text": "北京是中华人民共和国的首都，也是全国的政治中心。", "public": True, "tenant": "acme"},
    {"id": "zh2", "text": "上海是中国最大的经济中心和港口城市。", "public": True, "tenant": "acme"},
    {"id": "ja", "text": "東京は日本の首都で、世界有数の大都市です。", "public": True, "tenant": "globex"},
    {"id": "ja2", "text": "全文検索エンジンを使うと、大量の文書から素早く情報を探せます。", "public": True,
     "tenant": "globex"},
    {"id": "ko", "text": "서울은 대한민국의 수도이며 가장 큰 도시입니다.", "public": True, "tenant": "acme"},
    {"id": "ko2", "text": "부산은 한국에서 두 번째로 큰 항구 도시입니다.", "public": True, "tenant": "globex"},
    {"id": "en", "text": "Use the REST API with an access token; rate limits apply per tenant.", "public": True,
     "tenant": "acme", "metadata": {"category": "api", "version": 2}},
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import make_engine

    eng = make_engine(tmp_path_factory.mktemp("pipe"))
    assert eng.ingest(DOCS).documents == len(DOCS)
    yield eng
    eng.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [("首都", {"zh", "ja"}), ("東京", {"ja"}), ("検索", {"ja2"}), ("수도", {"ko"}), ("ＡＰＩ", {"en"}),
     ("臺灣", set()), ("港口", {"zh2"})],
)
def test_single_word_keyword_queries_hit_the_right_chunks(engine: Any, query: str, expected: set[str]) -> None:
    hits = engine.search(query, principals=[], mode="keyword", top_k=10)
    got = {h.doc_id for h in hits}
    if expected:
        assert expected <= got, (query, got)
        assert hits[0].doc_id in expected
        assert all(h.scores["keyword"] > 0 for h in hits)
    # BM25 must not match everything: a single-word query hits only texts sharing its terms
    assert len(got) <= len(expected) + 1, (query, got)


def test_hybrid_hits_carry_per_stage_scores_and_ranks(engine: Any) -> None:
    hits = engine.search("日本の首都", principals=[], mode="hybrid", top_k=5)
    assert hits[0].doc_id == "ja"
    assert {"dense", "keyword", "fused"} <= set(hits[0].scores)
    assert hits[0].ranks["fused"] == 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_tenant_and_metadata_filters_are_pushed_down(engine: Any) -> None:
    tenant = {"field": "tenant", "operator": "==", "value": "globex"}
    for mode in ("dense", "keyword", "hybrid"):
        hits = engine.search("首都 도시", principals=[], mode=mode, top_k=10, filters=tenant)
        assert hits and {h.doc_id for h in hits} <= {"ja", "ja2", "ko2"}
    meta = {"operator": "AND", "conditions": [
        {"field": "metadata.category", "operator": "==", "value": "api"},
        {"field": "metadata.version", "operator": ">=", "value": 2}]}
    assert [h.doc_id for h in engine.search("token", principals=[], filters=meta)] == ["en"]
    assert engine.search("token", principals=[], filters={"field": "metadata.version", "operator": ">", "value": 2}) == []


def test_bad_requests_are_clear_errors(engine: Any) -> None:
    with pytest.raises(FilterError, match="operator"):
        engine.search("x", principals=[], filters={"field": "doc_id", "operator": "~=", "value": "a"})
    with pytest.raises(ConfigError, match="mode"):
        engine.search("x", principals=[], mode="fuzzy")
    with pytest.raises(FilterError):
        engine.search("x", principals=["group:a\x00"])
    with pytest.raises(Exception, match="list of strings"):
        engine.search("x", principals="group:a")


class LeakyStore:
    """A deliberately broken store that ignores filters: the post-check must still hide what leaks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def search_dense(self, vector: Any, top_k: int, filters: Any, **kw: Any) -> Any:
        return self.inner.search_dense(vector, top_k, None, **kw)

    def search_keyword(self, terms: Any, top_k: int, filters: Any, **kw: Any) -> Any:
        return self.inner.search_keyword(terms, top_k, None, **kw)

    def fetch(self, ids: Any, filters: Any, fields: Any = None) -> Any:  # the late fetch leaks too
        return self.inner.fetch(ids, None, fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_post_check_drops_and_logs_what_a_broken_store_leaks(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import make_engine

    eng = make_engine(tmp_path)
    eng.ingest([{"id": "secret", "text": "机密：首都的服务器密码", "acl": ["group:ops"]},
                {"id": "open", "text": "首都的天气", "public": True}])
    pipeline = eng.pipeline
    pipeline.store = LeakyStore(eng.store)
    with caplog.at_level(logging.ERROR, logger="cjkrag.search"):
        for mode in ("dense", "keyword", "hybrid"):
            assert {h.doc_id for h in pipeline.search("首都", principals=["group:x"], mode=mode)} == {"open"}
    assert "post-check dropped chunk" in caplog.text
    eng.close()


class LeakySearchStore(LeakyStore):
    """Searches ignore filters, the late fetch does not: the fetch's filter already hides the leak."""

    def fetch(self, ids: Any, filters: Any, fields: Any = None) -> Any:
        return self.inner.fetch(ids, filters, fields)


def test_late_fetch_applies_the_access_filter_again(tmp_path: Any) -> None:
    from tests.conftest import make_engine

    eng = make_engine(tmp_path)
    eng.ingest([{"id": "secret", "text": "机密：首都的服务器密码", "acl": ["group:ops"]},
                {"id": "open", "text": "首都的天气", "public": True}])  # fmt: skip
    pipeline = eng.pipeline
    assert pipeline.late_fetch and callable(getattr(eng.store, "fetch", None))
    pipeline.store = LeakySearchStore(eng.store)
    for mode in ("dense", "keyword", "hybrid"):
        hits = pipeline.search("首都", principals=["group:x"], mode=mode)
        assert [h.doc_id for h in hits] == ["open"]
        assert hits[0].text == "首都的天气"
    eng.close()


QUERIES = ["首都", "日本の首都", "수도", "API rate limits", "港口城市", "検索エンジン"]
TENANT = {"field": "tenant", "operator": "==", "value": "acme"}


def _hits_with(pipeline: Any, setting: str, mode: str, top_ks: tuple[int, ...]) -> dict[bool, list[Any]]:
    """Every hit (all fields) of QUERIES x (no filter, TENANT) x top_ks with ``pipeline.<setting>`` off, then on."""
    saved = getattr(pipeline, setting)
    runs = {}
    try:
        for on in (False, True):
            setattr(pipeline, setting, on)
            runs[on] = [
                [h.to_dict() for h in pipeline.search(q, principals=["group:x"], top_k=k, filters=f, mode=mode)]
                for q in QUERIES for f in (None, TENANT) for k in top_ks
            ]  # fmt: skip
    finally:
        setattr(pipeline, setting, saved)
    return runs


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_late_fetch_returns_exactly_the_hits_of_a_full_search(engine: Any, mode: str) -> None:
    """Searching for ids and scores, then fetching the fields of the hits kept, changes nothing returned."""
    runs = _hits_with(engine.pipeline, "late_fetch", mode, (1, 5))
    assert runs[True] == runs[False]
    assert any(runs[True])


@pytest.mark.parametrize("mode", ["hybrid", "dense"])
def test_concurrent_retrieval_returns_exactly_the_sequential_hits(engine: Any, mode: str) -> None:
    """retrieval.concurrent only overlaps filter preparation / keyword side with the embedding: same hits."""
    runs = _hits_with(engine.pipeline, "concurrent", mode, (10,))
    assert runs[True] == runs[False]
    assert any(runs[True])


def test_query_embedding_cache_returns_what_embedding_again_would(engine: Any) -> None:
    from cjkrag.pipeline.query_cache import QueryEmbeddingCache

    pipeline = engine.pipeline
    assert isinstance(pipeline.query_cache, QueryEmbeddingCache)
    fresh = [float(x) for x in pipeline.embedder.embed_queries(["首都在哪里"])[0]]
    first = pipeline.query_vector("首都在哪里")
    hits_before = pipeline.query_cache.hits
    assert pipeline.query_vector("首都在哪里") == first == fresh
    assert pipeline.query_cache.hits == hits_before + 1


def test_query_embedding_cache_is_bounded_and_keyed_by_model_and_prompt() -> None:
    import numpy as np

    from cjkrag.pipeline.query_cache import QueryEmbeddingCache

    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    cache = QueryEmbeddingCache(2)
    cache.get_many("m", "query: ", ["a", "bb"], embed)
    cache.get_many("m", "query: ", ["a"], embed)  # hit
    cache.get_many("m2", "query: ", ["a"], embed)  # another model: a miss; evicts "bb" (least recent)
    cache.get_many("m", "", ["a"], embed)  # another prompt: a miss
    assert calls == [["a", "bb"], ["a"], ["a"]] and len(cache) == 2
    (v,) = cache.get_many("m", "", ["a"], embed)
    with pytest.raises(ValueError):
        v[0] = 5.0  # shared between callers: read-only
    with pytest.raises(ValueError):
        QueryEmbeddingCache(-1)


def test_adaptive_fusion_weighs_keyword_by_the_script_of_its_hits(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default fusion gets, as the keyword run's evidence, the share of its hits (stored `language`) in
    the query's script family: full weight for a Japanese query over Japanese chunks, none when the query is
    declared English and only Han chunks matched."""
    import cjkrag.pipeline.fusion as fusion

    seen: list[dict[str, Any]] = []
    real = fusion.fuse

    def spy(runs: Any, method: str = "rrf", **params: Any) -> Any:
        seen.append({"method": method, **params})
        return real(runs, method, **params)

    monkeypatch.setattr(fusion, "fuse", spy)
    assert engine.config.retrieval.fusion.method == "adaptive"
    engine.search("東京は日本の首都", principals=[], mode="hybrid", top_k=5)
    engine.search("首都", principals=[], mode="hybrid", top_k=5, language="en")
    assert [s["method"] for s in seen] == ["adaptive", "adaptive"]
    assert seen[0]["evidence"] == {"keyword": 1.0}
    assert seen[1]["evidence"] == {"keyword": 0.0}
