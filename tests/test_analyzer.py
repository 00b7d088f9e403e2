"""The CJK keyword analyzer, with the real rjieba / SudachiPy / kiwipiepy / OpenCC dictionaries."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cjkrag.errors import ConfigError, InputError
from cjkrag.pipeline.analyzer import CJKAnalyzer, get_analyzer, parse_language, term_id

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="module")
def analyzer() -> CJKAnalyzer:
    a = get_analyzer()
    a.warm_up()
    return a


def words(tokens: list[str]) -> list[str]:
    """Tokens without the bigram family."""
    return [t for t in tokens if not t.startswith("_b_")]


# ------------------------------------------------------------------------------------------ packaging
def test_import_stays_light() -> None:
    code = (
        "import sys, cjkrag.pipeline.analyzer as a; a.CJKAnalyzer(); "
        "print(sorted(m for m in ('rjieba','sudachipy','kiwipiepy','opencc','torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ per language
def test_chinese_search_mode_words(analyzer: CJKAnalyzer) -> None:
    tokens = analyzer.analyze("中华人民共和国首都")
    for expected in ("首都", "中华", "华人", "人民", "共和国", "中华人民共和国"):
        assert expected in tokens
    assert "_b_国首" in tokens  # the bigram backstop spans word boundaries


def test_chinese_stopwords_dropped_and_single_characters_kept(analyzer: CJKAnalyzer) -> None:
    tokens = words(analyzer.analyze("北京是中国的首都。我喜欢猫和狗"))
    assert {"北京", "中国", "首都", "喜欢"} <= set(tokens)
    assert "的" not in tokens and "是" not in tokens and "和" not in tokens
    assert "猫" in tokens and "狗" in tokens  # single-character words from the analyzer survive
    keep_all = CJKAnalyzer(stopwords=False)
    assert "的" in keep_all.analyze("北京是中国的首都。")


def test_japanese_words_and_particles(analyzer: CJKAnalyzer) -> None:
    tokens = analyzer.analyze("東京の天気")
    assert "東京" in tokens and "天気" in tokens
    assert "の" not in tokens
    assert "东京" not in tokens  # kanji in a Japanese sentence are never folded to Simplified


def test_japanese_inflection_and_reading_variants_match(analyzer: CJKAnalyzer) -> None:
    past = analyzer.analyze("検索しました")
    plain = analyzer.analyze("検索する")
    assert "検索" in past and "検索" in plain
    assert not {"し", "まし", "た", "する", "為る"} & set(past + plain)
    assert "検索" in analyzer.analyze("けんさくする")  # kana spelling -> normalized form
    assert "行く" in analyzer.analyze("図書館に行った")  # inflected verb -> dictionary form


def test_japanese_compound_has_subwords(analyzer: CJKAnalyzer) -> None:
    tokens = analyzer.analyze("全文検索エンジンを使う")
    assert {"全文", "検索エンジン", "検索", "エンジン", "使う"} <= set(tokens)
    assert "を" not in tokens


def test_korean_content_morphemes(analyzer: CJKAnalyzer) -> None:
    tokens = analyzer.analyze("서울은 한국의 수도입니다")
    assert words(tokens) == ["서울", "한국", "수도"]
    assert not {"은", "의", "이", "입니다"} & set(tokens)
    assert "먹다" in analyzer.analyze("밥을 먹었다")  # verb stem + 다


def test_mixed_chinese_english(analyzer: CJKAnalyzer) -> None:
    tokens = analyzer.analyze("用Python调用API接口")
    assert {"python", "api", "调用", "接口"} <= set(tokens)
    assert "Python" not in tokens
    assert words(analyzer.analyze("rate-limit python3 the VPN")) == ["rate", "limit", "python3", "vpn"]


def test_traditional_and_simplified_give_the_same_tokens(analyzer: CJKAnalyzer) -> None:
    assert analyzer.analyze("臺灣") == analyzer.analyze("台湾")
    assert analyzer.analyze("資料庫") == analyzer.analyze("数据库")
    assert analyzer.analyze("我們使用軟體") == analyzer.analyze("我们使用软件")
    chars_only = CJKAnalyzer(traditional_to_simplified="t2s")
    assert chars_only.analyze("臺灣") == chars_only.analyze("台湾")
    off = CJKAnalyzer(traditional_to_simplified=False)
    assert off.analyze("臺灣") != off.analyze("台湾")


def test_full_width_and_half_width_fold(analyzer: CJKAnalyzer) -> None:
    assert analyzer.analyze("ＡＰＩ") == ["api"]
    assert analyzer.analyze("１２３") == ["123"]
    assert analyzer.analyze("ｶﾀｶﾅ") == analyzer.analyze("カタカナ") != []
    assert analyzer.analyze("ＡＰＩ接口") == analyzer.analyze("API接口")


def test_emoji_and_lone_surrogates_are_dropped(analyzer: CJKAnalyzer) -> None:
    assert analyzer.analyze("😀") == []
    assert analyzer.analyze("\ud83d") == []
    assert analyzer.analyze("東京😀の天気\ud83d") == analyzer.analyze("東京の天気")
    assert analyzer.analyze("北京🇨🇳首都") == analyzer.analyze("北京 首都")


@pytest.mark.parametrize("text", ["", " ", "\n\t\u3000 ", "。、！？", "😀😀"])
def test_empty_input_gives_no_tokens(analyzer: CJKAnalyzer, text: str) -> None:
    assert analyzer.analyze(text) == []
    assert analyzer.analyze_query(text) == []


# ------------------------------------------------------------------------------------------ languages
def test_language_per_script_and_sentence(analyzer: CJKAnalyzer) -> None:
    # a Chinese text quoting one Japanese sentence: the Chinese sentences stay Chinese (folded)
    tokens = analyzer.analyze("臺灣是一個美麗的地方，有很多歷史建築。東京の天気は晴れ。")
    assert {"台湾", "历史", "建筑"} <= set(tokens) and "東京" in tokens and "东京" not in tokens
    # a Japanese text with a Han-only title: the title is Japanese too (most Han is in kana sentences)
    tokens = analyzer.analyze("東京都庁舎\n東京都庁舎は新宿区にある東京都の本庁舎です。")
    assert tokens.count("東京") >= 2 and "东京" not in tokens
    # katakana alone does not make a sentence Japanese: the Han around a katakana name stays Chinese
    tokens = analyzer.analyze("為東京ムービー的劇場用動畫作品。")
    assert {"剧场", "动画", "ムービー"} <= set(tokens)
    assert analyzer.analyze("東京の天気", "en") == analyzer.analyze("東京の天気")
    # a Han-only run inside a hiragana sentence is Japanese even when the text is mostly Chinese
    tokens = analyzer.analyze("臺灣是一個美麗的地方，有很多歷史建築。東京、大阪は大都市です。")
    assert {"東京", "大阪", "台湾"} <= set(tokens)
    assert words(analyzer.analyze("東京")) == ["东京"]  # no kana, no language: Chinese
    assert words(analyzer.analyze("東京", language="ja")) == ["東京"]
    assert words(analyzer.analyze("東京", language="ja-JP")) == ["東京"]
    # language="zh" keeps Han-only runs Chinese inside a sentence that has kana; kana stays Japanese
    zh = analyzer.analyze("東京 アニメ", language="zh")
    assert "东京" in zh and "アニメ" in zh


def test_parse_language() -> None:
    assert parse_language("zh-TW") == "zh"
    assert parse_language("jpn") == "ja"
    assert parse_language("ko_KR") == "ko"
    assert parse_language("fr") is None
    assert parse_language(None) is None
    with pytest.raises(InputError, match="language"):
        parse_language("not a language")
    with pytest.raises(InputError, match="language"):
        parse_language(7)


# ------------------------------------------------------------------------------------------ query side
@pytest.mark.parametrize(
    ("query", "document", "word"),
    [
        ("首都", "北京是中国的首都。", "首都"),
        ("東京", "東京は日本の首都です。", "東京"),
        ("検索", "全文検索エンジンを使う", "検索"),
        ("수도", "서울은 한국의 수도입니다", "수도"),
    ],
)
def test_single_word_query_matches_running_text(
    analyzer: CJKAnalyzer, query: str, document: str, word: str
) -> None:
    q = analyzer.analyze_query(query)
    d = analyzer.analyze(document)
    assert word in q and word in d  # the word itself, not just a shared bigram


def test_query_is_deduplicated_index_is_not(analyzer: CJKAnalyzer) -> None:
    assert analyzer.analyze("数据 数据 api api").count("数据") == 2
    q = analyzer.analyze_query("数据 数据 api api")
    assert len(q) == len(set(q)) and "数据" in q and "api" in q


def test_ambiguous_han_query_is_read_as_chinese_and_japanese(analyzer: CJKAnalyzer) -> None:
    q = analyzer.analyze_query("東京")
    assert "东京" in q and "東京" in q
    assert "东京" not in analyzer.analyze_query("東京", language="ja")


# ------------------------------------------------------------------------------------------ safety
_ALPHABET = st.sampled_from(
    [
        *"中华人民共和国首都東京検索のはをです서울은한국의수도 \t\n\u3000,.!?、。「」abcXYZ-_0１２ＡｶﾀｶﾅｰAPI😀\u0301",
        *("\ud83d", "\U00020000", "ß", "İ", "ﬁ", "㈱", "①", "\u200b", "\xa0", "\u2028"),
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(_ALPHABET, max_size=40).map("".join))
def test_tokens_are_safe_to_join_with_spaces(analyzer: CJKAnalyzer, text: str) -> None:
    for tokens in (analyzer.analyze(text), analyzer.analyze_query(text)):
        for token in tokens:
            assert token and not any(c.isspace() for c in token), (text, token)
            assert token.isprintable(), (text, token)
        assert " ".join(tokens).split() == tokens
        assert all(re.fullmatch(r"t[0-9a-f]{16}", term_id(t)) for t in tokens)


def test_term_id_is_stable_and_distinct() -> None:
    assert term_id("首都") == term_id("首都")
    assert term_id("首都") != term_id("_b_首都")
    assert term_id("\ud83d").startswith("t")  # never raises, even on a lone surrogate
    assert re.fullmatch(r"t[0-9a-f]{16}", term_id("api"))


def test_long_words_are_cut(analyzer: CJKAnalyzer) -> None:
    assert analyzer.analyze("x" * 500) == ["x" * 64]


def test_long_japanese_input_over_the_sudachi_limit(analyzer: CJKAnalyzer) -> None:
    sentences = "東京の天気は晴れです。" * 3000  # ~99 KB, SudachiPy refuses > 49,149 bytes per call
    assert analyzer.analyze(sentences).count("東京") == 3000
    one_run = "東京の天気" * 5000  # a single 25,000-character run: cut into pieces
    assert analyzer.analyze(one_run).count("東京") >= 4990


def test_long_korean_text_is_split_for_kiwi_threads(analyzer: CJKAnalyzer) -> None:
    one = analyzer.analyze("서울은 한국의 수도입니다.")
    long_text = "서울은 한국의 수도입니다. " * 600  # ~8,400 characters: analyzed in groups, in parallel
    assert analyzer.analyze(long_text) == one * 600


# ------------------------------------------------------------------------------------------ options
def test_bigram_options(analyzer: CJKAnalyzer) -> None:
    default = analyzer.analyze("北京是中国的首都。서울은 한국의 수도입니다")
    assert "_b_北京" in default and "_b_서울" in default
    assert not [t for t in CJKAnalyzer(bigrams=False).analyze("北京是中国的首都") if t.startswith("_b_")]
    plain = CJKAnalyzer(bigram_prefix="").analyze("北京是首都")
    assert plain.count("北京") == 2  # the word and the bigram fold together
    assert "_b_東京" not in analyzer.analyze("東京の天気")  # Japanese: off by default (measured)
    assert "_b_東京" in CJKAnalyzer(bigram_languages=("zh", "ja", "ko")).analyze("東京の天気")


def test_korean_bigram_mode_skips_the_analyzer() -> None:
    tokens = CJKAnalyzer(korean="bigrams").analyze("서울은 한국의 수도 입니다 너")
    assert tokens == ["_b_서울", "_b_울은", "_b_한국", "_b_국의", "_b_수도", "_b_입니", "_b_니다", "너"]


def test_bad_options_and_inputs(analyzer: CJKAnalyzer) -> None:
    with pytest.raises(ConfigError, match="japanese"):
        CJKAnalyzer(japanese="mecab")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bigram_prefix"):
        CJKAnalyzer(bigram_prefix="a b")
    with pytest.raises(ConfigError, match="bigram_languages"):
        CJKAnalyzer(bigram_languages=("zh", "fr"))
    with pytest.raises(ConfigError, match="traditional_to_simplified"):
        CJKAnalyzer(traditional_to_simplified="no-such-config").analyze("臺灣")
    with pytest.raises(InputError, match="decode"):
        analyzer.analyze(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="languages"):
        analyzer.analyze_many(["a", "b"], ["zh"])
    with pytest.raises(InputError, match=r"texts\[1\]"):
        analyzer.analyze_many(["a", None])  # type: ignore[list-item]


def test_get_analyzer_caches_per_options() -> None:
    assert get_analyzer() is get_analyzer()
    assert get_analyzer(bigrams=False) is get_analyzer(bigrams=False)
    assert get_analyzer(bigrams=False) is not get_analyzer()
    assert "sudachidict-core=" in get_analyzer().fingerprint
    assert get_analyzer().fingerprint != get_analyzer(bigrams=False).fingerprint


# ------------------------------------------------------------------------------------------ batching, threads
MIXED = [
    "北京是中国的首都。",
    "東京は日本の首都です。検索しました",
    "서울은 한국의 수도입니다. 밥을 먹었다",
    "用Python调用API接口",
    "",
    "臺灣的資料庫",
    "Korean: 한국어 and 日本語のテキスト",
]


def test_analyze_many_equals_analyze(analyzer: CJKAnalyzer) -> None:
    langs: list[str | None] = [None, "ja", "ko", None, None, "zh", None]
    assert analyzer.analyze_many(MIXED, langs) == [
        analyzer.analyze(t, lang) for t, lang in zip(MIXED, langs, strict=True)
    ]
    assert analyzer.analyze_many(MIXED) == [analyzer.analyze(t) for t in MIXED]
    assert analyzer.analyze_many(["東京"], "ja") == [analyzer.analyze("東京", "ja")]
    assert analyzer.analyze_many([]) == []


def test_thread_safe(analyzer: CJKAnalyzer) -> None:
    texts = MIXED * 10
    expected = [analyzer.analyze(t) for t in texts]
    results: dict[int, list[list[str]]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            results[k] = [analyzer.analyze(t) for t in texts]
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(results[k] == expected for k in range(4))


# ------------------------------------------------------------------------------------------ BM25
BM25_DOCS = [
    "北京是中国的首都。",
    "上海是中国最大的城市之一。",
    "首先，我们需要准备数据。",
    "这个都市的交通非常方便。",
    "广州的天气很热。",
    "東京は日本の首都です。",
    "京都には古いお寺がたくさんあります。",
    "東北地方は冬が寒いです。",
    "全文検索エンジンを使う",
    "病院で検査を受けました。",
    "索引を作成してください。",
    "서울은 한국의 수도입니다",
    "부산은 항구 도시입니다",
    "수요일에 도서관에 갔다",
    "도로가 매우 넓다",
    "Python is a programming language.",
    "The API returns JSON.",
    "我们用Python调用接口。",
    "大阪の食べ物はおいしいです。",
    "한국어 형태소 분석기",
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [("首都", {0, 5}), ("東京", {5}), ("検索", {8}), ("수도", {11}), ("python", {15, 17})],
)
def test_bm25_ranks_the_right_document_first(analyzer: CJKAnalyzer, query: str, expected: set[int]) -> None:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(analyzer.analyze_many(BM25_DOCS), show_progress=False)
    top, scores = retriever.retrieve([analyzer.analyze_query(query)], k=3, show_progress=False)
    assert int(top[0][0]) in expected and scores[0][0] > 0
    hits = {int(d) for d, s in zip(top[0], scores[0], strict=True) if s > 0}
    assert expected <= hits


def _benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("bench_analyzer", ROOT / "benchmarks" / "analyzer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ours_is_not_worse_than_naive_bigrams_on_cmrc2018() -> None:
    """All 3,219 cmrc2018 questions (a 300-question sample is too noisy near this set's ceiling: the
    benchmark prints both)."""
    if not (SHARED / "data" / "beir" / "cmrc2018-passage" / "corpus.jsonl").exists():
        pytest.skip("../shared/data/beir/cmrc2018-passage is absent")
    bench = _benchmark()
    docs, queries, relevant, own = bench.quality_set("cmrc2018-passage")
    analyzer = get_analyzer()
    ours = bench.evaluate(analyzer.analyze_many(docs), [analyzer.analyze_query(q) for q in queries], relevant, own)
    naive = bench.evaluate(
        [bench.char_bigrams(d) for d in docs], [bench.char_bigram_query(q) for q in queries], relevant, own
    )
    print(f"\ncmrc2018-passage, all queries: cjkrag {ours} | char-bigram {naive}")
    assert ours["ndcg@10"] >= naive["ndcg@10"]
    assert ours["recall@10"] >= naive["recall@10"]
