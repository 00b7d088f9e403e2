"""Chunk context: the document title (and section path) is searched by keyword; the stored text stays the body."""

from __future__ import annotations

from pathlib import Path

from cjkrag.ingest.chunker import chunk_context, context_tokens, fit_context, keyword_text, with_context
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


class _Recording:
    """The engine's embedder, recording every passage it embeds."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.passages: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed_passages(self, texts: list[str]) -> object:
        self.passages += texts
        return self.inner.embed_passages(texts)  # type: ignore[attr-defined]


def _ingest(tmp_path: Path, context: str, title: str, text: str) -> tuple[object, _Recording]:
    engine = make_engine(tmp_path, chunking={"max_tokens": 64, "overlap_tokens": 8, "context": context})
    recorder = _Recording(engine.embedder)
    engine._embedder = recorder
    engine.ingest([{"id": "m", "title": title, "text": text, "public": True}])
    return engine, recorder


def test_embedded_context_fits_the_token_budget_and_the_stored_text_stays_the_body(tmp_path: Path) -> None:
    text = "。".join(f"第{i}節では設定ファイルの書き方と注意点を説明する" for i in range(30))
    engine, recorder = _ingest(tmp_path, "both", "製品マニュアル", text)
    try:
        rows = engine.store.query(None, ["text", "start", "end"])  # type: ignore[attr-defined]
        assert len(rows) > 3 and len(recorder.passages) == len(rows)
        for passage in recorder.passages:
            assert passage.startswith("製品マニュアル\n")
            assert recorder.count_tokens(passage) <= 64  # inside the budget: nothing is truncated
        for row in rows:
            assert row["text"] == text[row["start"] : row["end"]]  # body only, offsets into the body
    finally:
        engine.close()  # type: ignore[attr-defined]


def test_a_long_title_is_cut_to_a_quarter_of_the_budget(tmp_path: Path) -> None:
    title = "とても長い題名" * 40
    engine, recorder = _ingest(tmp_path, "embedding", title, "本文です。" * 60)
    try:
        for passage in recorder.passages:
            line = passage.split("\n", 1)[0]
            assert title.startswith(line) and 0 < len(line) < len(title)
            assert recorder.count_tokens(passage) <= 64
        # "embedding" keeps the title out of the keyword index
        assert engine.search(title[:7], principals=[], mode="keyword") == []  # type: ignore[attr-defined]
    finally:
        engine.close()  # type: ignore[attr-defined]


def test_fit_context_cuts_at_a_token_boundary() -> None:
    embedder = FakeEmbedder(64)
    line = "alpha beta gamma delta epsilon"
    assert fit_context(line, embedder, 100) == line
    cut = fit_context(line, embedder, 3)
    assert line.startswith(cut) and cut != line
    assert embedder.count_tokens(with_context(cut, "x")) - embedder.count_tokens("x") <= 3
    assert fit_context(line, embedder, 0) == ""


def test_the_context_setting_is_part_of_the_stored_versions(tmp_path: Path) -> None:
    """Switching chunking.context re-embeds (chunker version) or re-analyzes (analyzer tag)."""
    keywords = make_engine(tmp_path, chunking={"context": "keywords"})
    both = make_engine(tmp_path, chunking={"context": "both"})
    none = make_engine(tmp_path, chunking={"context": "none"})
    assert keywords.analyzer_tag() == both.analyzer_tag() != none.analyzer_tag()
    assert "kw=body" in none.analyzer_tag()
