"""Chunk context: the document title (and section path) is searched by keyword; the stored text stays the body."""

from __future__ import annotations

from pathlib import Path

from cjkrag.ingest.chunker import chunk_context, context_tokens, keyword_text, with_context
from cjkrag.ingest.embedding.fake import FakeEmbedder
from cjkrag.types import Chunk, Document
from tests.conftest import make_engine


def test_chunk_context_title_and_section_path() -> None:
    sections = [{"start": 0, "path": ["設定"]}, {"start": 50, "path": ["設定", "インストール"]}]
    doc = Document(id="m", text="x" * 100, title="  製品 マニュアル ", metadata={"sections": sections})
    assert chunk_context(doc) == "製品 マニュアル"
    assert chunk_context(doc, Chunk("x", 10, 20, 0, 3)) == "製品 マニュアル > 設定"
    assert chunk_context(doc, Chunk("x", 60, 70, 1, 3)) == "製品 マニュアル > 設定 > インストール"
    assert chunk_context(Document(id="n", text="body")) == ""
    # malformed section metadata is ignored, never an error
    odd = Document(id="o", text="t", title="T", metadata={"sections": [{"start": "0", "path": 3}, "x"]})
    assert chunk_context(odd, Chunk("t", 0, 1, 0, 1)) == "T"
    assert with_context("", "body") == "body"
    assert keyword_text(doc, Chunk("本文", 60, 62, 1, 3)) == "製品 マニュアル > 設定 > インストール\n本文"


def test_context_tokens_counts_the_longest_context_line() -> None:
    embedder = FakeEmbedder(64)
    doc = Document(id="m", text="x", title="alpha beta", metadata={"sections": [{"start": 0, "path": ["gamma delta"]}]})
    longest = embedder.count_tokens("alpha beta > gamma delta\nx") - embedder.count_tokens("x")
    assert context_tokens(doc, embedder) == longest > 0
    assert context_tokens(Document(id="n", text="x"), embedder) == 0


def test_a_title_is_found_by_keyword_and_the_stored_text_stays_the_body(tmp_path: Path) -> None:
    """Milvus Lite + the real analyzer: a passage titled 임종석 is found by that name alone, although its
    body never says it; hits still carry the body text and offsets."""
    body = "대한민국의 정치인으로 대통령비서실 비서실장을 지냈다. 국회의원을 두 번 역임하였다."
    engine = make_engine(tmp_path)
    try:
        engine.ingest([
            {"id": "person", "title": "임종석", "text": body, "public": True},
            {"id": "other", "title": "서울", "text": "서울은 대한민국의 수도이다. 정치인이 많이 산다.", "public": True},
        ])
        hits = engine.search("임종석", principals=[], mode="keyword", top_k=5)
        assert [h.doc_id for h in hits] == ["person"]
        assert hits[0].text == body and (hits[0].start, hits[0].end) == (0, len(body))
        assert hits[0].title == "임종석"
    finally:
        engine.close()
