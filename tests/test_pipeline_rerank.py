"""The query pipeline with a cross-encoder: Engine.search(..., rerank=True) over real Milvus Lite.

The reranker is the tiny cross-encoder built locally (tests/tiny_reranker.py); real ones load the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_engine
from tests.tiny_reranker import PAIRS, build_tiny_reranker


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("sentence_transformers")
    model = build_tiny_reranker()
    eng = make_engine(Path(tmp_path_factory.mktemp("rr")), rerank={"model": str(model), "top_n": 10, "max_length": 128})
    records = [{"id": f"p{i}", "text": passage, "public": True} for i, (_, passage) in enumerate(PAIRS)]
    assert eng.ingest(records).documents == len(PAIRS)
    yield eng
    eng.close()


def test_rerank_scores_flow_and_order_the_top_n(engine: Any) -> None:
    query, passage = PAIRS[0]
    hits = engine.search(query, principals=[], top_k=10, mode="hybrid", rerank=True)
    assert len(hits) == 10
    reranked = [h for h in hits if "rerank" in h.scores]
    assert len(reranked) == 10
    scores = [h.scores["rerank"] for h in reranked]
    assert scores == sorted(scores, reverse=True)
    assert all(h.score == h.scores["rerank"] and h.ranks["rerank"] == i + 1 for i, h in enumerate(hits))
    assert {"dense", "keyword", "fused"} & set(hits[0].scores)
    assert hits[0].text == passage


def test_rerank_improves_or_keeps_the_right_passage_first(engine: Any) -> None:
    wins = 0
    for i, (query, _) in enumerate(PAIRS[:12]):
        plain = engine.search(query, principals=[], top_k=5, mode="hybrid", rerank=False)
        ranked = engine.search(query, principals=[], top_k=5, mode="hybrid", rerank=True)
        assert all("rerank" not in h.scores for h in plain)
        rank_plain = next((r for r, h in enumerate(plain) if h.doc_id == f"p{i}"), 99)
        rank_rr = next((r for r, h in enumerate(ranked) if h.doc_id == f"p{i}"), 99)
        wins += rank_rr == 0
        assert rank_rr <= rank_plain or rank_rr == 0
    assert wins >= 10


def test_rerank_never_shows_what_the_caller_may_not_read(tmp_path: Path) -> None:
    model = build_tiny_reranker()
    eng = make_engine(tmp_path, rerank={"model": str(model), "top_n": 10, "max_length": 128})
    eng.ingest([{"id": f"p{i}", "text": p, "acl": ["group:a" if i % 2 else "group:b"]} for i, (_, p) in enumerate(PAIRS)])
    for query, _ in PAIRS[:6]:
        for h in eng.search(query, principals=["group:a"], top_k=10, rerank=True):
            assert int(h.doc_id[1:]) % 2 == 1
    eng.close()


def test_batched_reranks_of_concurrent_searches_equal_each_search_alone(engine: Any) -> None:
    """The service's rerank batcher scores several requests' candidates in one model pass: each request
    still gets its own candidates ranked as alone (scores equal up to float rounding from padding)."""
    from concurrent.futures import ThreadPoolExecutor

    queries = [q for q, _ in PAIRS[:8]]

    def run(q: str) -> list[tuple[str, float]]:
        return [(h.chunk_id, h.score) for h in engine.search(q, principals=[], top_k=10, mode="hybrid", rerank=True)]

    alone = {q: run(q) for q in queries}
    batcher = engine.enable_query_batching(max_batch=16, max_wait_ms=30)
    try:
        (reranks,) = batcher.companions
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(run, queries * 2))
        assert reranks.largest_batch > 1  # several requests' reranks did share a model pass
    finally:
        batcher.close()
        engine.pipeline.embed_queries = None
        engine.pipeline.rerank_scores = None
    for q, got in zip(queries * 2, together, strict=True):
        assert [c for c, _ in got] == [c for c, _ in alone[q]], q
        assert [s for _, s in got] == pytest.approx([s for _, s in alone[q]], abs=1e-5)
