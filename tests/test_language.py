"""One language per document and per query (issue: a Japanese chunk without kana was analyzed as Chinese)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cjkrag.connectors.filters import Condition
from cjkrag.ingest.chunker import with_language
from cjkrag.pipeline.analyzer import detect_language, get_analyzer
from cjkrag.types import Document
from tests.conftest import make_engine

HEADING = "東京都議会議員選挙結果一覧"  # kanji only: Chinese or Japanese?
QUERY = "東京都議会議員選挙の結果"
JAPANESE_BODY = (
    "東京都議会議員選挙は四年ごとに行われます。投票率は前回よりも上がりました。"
    "各党の獲得議席数は以下のとおりです。無所属の候補者も多く当選しました。"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (QUERY, "ja"),
        (HEADING, "zh"),  # Han alone: Chinese unless the document says otherwise
        (f"{HEADING}\n{JAPANESE_BODY}", "ja"),
        ("コンピューター", "ja"),
        ("서울은 한국의 수도입니다", "ko"),
        ("서울(漢陽)은 한국의 수도", "ko"),
        ("我爱北京天安门", "zh"),
        ("Hello, world", "en"),
        ("", "en"),
        # a Chinese text quoting a Japanese title keeps its Chinese function characters
        ("中文里引用了「千と千尋の神隠し」这部电影的名字，这是一部很有名的日本动画电影，在中国也很受欢迎。", "zh"),
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_with_language_keeps_the_records_own_language() -> None:
    doc = Document(id="d", text=HEADING, public=True)
    assert with_language(doc).language == "zh"
    assert with_language(Document(id="d", text=HEADING, public=True, language="ja")).language == "ja"
    assert with_language(Document(id="d", text=JAPANESE_BODY, title=HEADING, public=True)).language == "ja"


def test_query_language_is_decided_once() -> None:
    analyzer = get_analyzer()
    # a kanji-only sentence of a Japanese query is Japanese, not Simplified Chinese
    terms = analyzer.analyze_query(f"{HEADING}。{QUERY}")
    assert "东京" not in terms and "東京" in terms
    # a Han-only query stays ambiguous: both readings
    both = analyzer.analyze_query(HEADING)
    assert "东京" in both and "東京" in both
    # the caller's language wins over the detection
    assert "东京" in analyzer.analyze_query(QUERY, language="zh")


def test_kanji_only_chunk_of_a_japanese_document_matches_end_to_end(tmp_path: Path) -> None:
    """Milvus Lite + the real analyzer: the heading chunk is stored and analyzed as Japanese."""
    analyzer = get_analyzer()
    query_terms = set(analyzer.analyze_query(QUERY))
    # the defect this guards against: read as Chinese, the heading shares no term with the query
    assert not set(analyzer.analyze(HEADING)) & query_terms
    assert len(set(analyzer.analyze(HEADING, language="ja")) & query_terms) >= 7

    engine = make_engine(tmp_path, chunking={"max_tokens": 24, "overlap_tokens": 0})
    try:
        text = f"{HEADING}\n\n{JAPANESE_BODY}\n\n{JAPANESE_BODY}"
        report = engine.ingest([{"id": "tokyo", "text": text, "public": True}])
        assert report.documents == 1 and not report.failed
        rows = engine.store.query(Condition("doc_id", "==", "tokyo"), ["chunk_id", "text", "language"])
        assert len(rows) >= 3 and {r["language"] for r in rows} == {"ja"}
        heading_chunks = [r for r in rows if HEADING in r["text"] and "の" not in r["text"]]
        assert heading_chunks, [r["text"] for r in rows]  # the test needs a chunk without kana
        hits = engine.search(QUERY, principals=[], mode="keyword", top_k=5)
        assert hits and hits[0].chunk_id == heading_chunks[0]["chunk_id"]
    finally:
        engine.close()
