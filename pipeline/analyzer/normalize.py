"""Text normalization, script runs and language codes for the CJK analyzer (pure Python, no heavy deps).

The analyzer first normalizes the whole text (NFKC, then case folding), then cuts it into *runs* of one
script family:

* ``cjk``  -- Han ideographs and kana (Hiragana / Katakana, ``ー``, ``々``...);
* ``ko``   -- Hangul, including the single spaces between Korean words (Korean is written with spaces and
  its analyzer needs the whole phrase: ``서울은 한국의 수도입니다`` is one run);
* ``word`` -- any other letters / digits (Latin, Greek, Cyrillic, digits...), one word per run.

Everything else (whitespace, punctuation, symbols, emoji, lone surrogates, private-use characters) separates
runs and never reaches a token, so every token is free of whitespace and safe to join with single spaces.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from typing import Final, Literal

from cjkrag.errors import InputError

Language = Literal["zh", "ja", "ko", "en"]
"""The languages an explicit ``language=`` may name (aliases such as ``zh-TW``, ``jpn`` are folded)."""

# --- character classes (ranges valid *after* NFKC: half-width kana / Hangul are already full width) ----
HAN: Final = (
    "\u3005\u3006\u3007\u3021-\u3029\u3038-\u303b"  # 々 〆 〇, Suzhou numerals, 〻
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0003134f"
)
KANA: Final = (
    "\u3041-\u309f"  # Hiragana (with combining voiced marks and ゟ)
    "\u30a0-\u30fa\u30fc-\u30ff"  # Katakana (ー included, the middle dot ・ U+30FB is punctuation)
    "\u31f0-\u31ff\U0001b000-\U0001b16f"  # small Katakana extension, kana supplement / extended
)
HANGUL: Final = "\u1100-\u11ff\u3131-\u318e\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff"

RUN_RE: Final = re.compile(
    rf"(?P<cjk>[{HAN}{KANA}]+)"
    rf"|(?P<ko>[{HANGUL}]+(?:[ \t]+[{HANGUL}]+)*)"
    rf"|(?P<word>[^\W_{HAN}{KANA}{HANGUL}]+)"
)
_KANA_RE: Final = re.compile(f"[{KANA}]")
_HIRAGANA_RE: Final = re.compile("[\u3041-\u309f\U0001b001-\U0001b11f]")
SCRIPT_PIECE_RE: Final = re.compile(f"(?P<han>[{HAN}]+)|(?P<kana>[{KANA}]+)")
"""Cuts a Han+kana run into its Han and kana pieces."""
_HAN_RE: Final = re.compile(f"[{HAN}]")
# sentence ends (after NFKC: ！→!, ？→?, ．→., ｡→。)
_SENTENCE_END_RE: Final = re.compile(r"[。.!?\n]+")

RunKind = Literal["cjk", "ko", "word"]


def normalize(text: str) -> str:
    """NFKC then case folding: ``ＡＰＩ`` -> ``api``, ``ｶﾀｶﾅ`` -> ``カタカナ``, ``１２３`` -> ``123``."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        return text.casefold()
    return text.lower()


def has_kana(text: str) -> bool:
    return _KANA_RE.search(text) is not None


def has_han(text: str) -> bool:
    return _HAN_RE.search(text) is not None


def iter_runs(text: str) -> list[tuple[RunKind, int, str]]:
    """``(kind, start, run)`` for every script run of an already normalized ``text``, in order."""
    out: list[tuple[RunKind, int, str]] = []
    for m in RUN_RE.finditer(text):
        kind = m.lastgroup
        out.append((kind, m.start(), m.group()))  # type: ignore[arg-type]
    return out


class JapaneseContext:
    """Answers "is the sentence at offset ``i`` Japanese?" for one normalized text that has kana.

    A sentence with hiragana is Japanese: particles and inflections are hiragana, so every Japanese
    sentence of any length has some, while katakana alone also shows up in Chinese (a Japanese name or
    title quoted in a Chinese sentence). A sentence without hiragana (a title, a heading, a list of names)
    is Japanese when most of the text's Han characters sit in hiragana sentences -- the text is
    Japanese -- and Chinese otherwise.
    """

    __slots__ = ("_flags", "_starts")

    def __init__(self, text: str) -> None:
        starts = [0]
        starts.extend(m.end() for m in _SENTENCE_END_RE.finditer(text))
        bounds = [*starts, len(text)]
        sentences = [text[bounds[k] : bounds[k + 1]] for k in range(len(starts))]
        flags = [_HIRAGANA_RE.search(sentence) is not None for sentence in sentences]
        han_japanese = sum(len(_HAN_RE.findall(s)) for s, f in zip(sentences, flags, strict=True) if f)
        han_other = sum(len(_HAN_RE.findall(s)) for s, f in zip(sentences, flags, strict=True) if not f)
        if any(flags) and han_japanese >= han_other:
            flags = [True] * len(flags)
        self._starts = starts
        self._flags = flags

    def at(self, offset: int) -> bool:
        return self._flags[bisect.bisect_right(self._starts, offset) - 1]


_LANGUAGE_ALIASES: Final[dict[str, Language | None]] = {
    "zh": "zh",
    "zho": "zh",
    "chi": "zh",
    "cmn": "zh",
    "yue": "zh",
    "wuu": "zh",
    "ja": "ja",
    "jp": "ja",
    "jpn": "ja",
    "ko": "ko",
    "kor": "ko",
    "en": "en",
    "eng": "en",
    "auto": None,
    "": None,
}
_LANGUAGE_TAG_RE: Final = re.compile(r"[a-z]{2,3}(?:[-_][a-z0-9]{1,8})*")


def parse_language(language: object, *, field: str = "language") -> Language | None:
    """Fold a language code to ``"zh" | "ja" | "ko" | "en"`` or ``None`` (detect from the script).

    Accepts BCP-47 style tags (``zh-TW``, ``zh_Hant``, ``ja-JP``, ``ko-KR``) and ISO 639-2/3 codes
    (``jpn``, ``kor``, ``cmn``). Any other well-formed tag (``fr``, ``de-CH``) means "not CJK": the text is
    analyzed by script detection exactly like ``None``. Malformed values raise :class:`InputError`.
    """
    if language is None:
        return None
    if not isinstance(language, str):
        raise InputError(
            f"{field}={language!r}: expected a language code string such as 'zh', 'ja', 'ko', 'en' or None"
        )
    code = language.strip().lower()
    if code in _LANGUAGE_ALIASES:
        return _LANGUAGE_ALIASES[code]
    if not _LANGUAGE_TAG_RE.fullmatch(code):
        raise InputError(
            f"{field}={language!r} is not a language code: use 'zh', 'ja', 'ko', 'en' (or a BCP-47 tag "
            "such as 'zh-TW', 'ja-JP'), or None to detect the language from the script"
        )
    primary = re.split(r"[-_]", code, maxsplit=1)[0]
    return _LANGUAGE_ALIASES.get(primary)


SUPPORTED_LANGUAGES: Final[tuple[str, ...]] = ("zh", "ja", "ko", "en")


def query_language(language: object, *, field: str = "language") -> Language | None:
    """An explicit query language (``cjkrag query --language``, the service's ``language``): one of
    :data:`SUPPORTED_LANGUAGES` (aliases such as ``zh-TW``, ``ja-JP``, ``ko-KR``, ``jpn`` are folded), or
    ``None`` / ``"auto"`` to detect it from the query. Unlike :func:`parse_language`, a well-formed code of a
    language the analyzer does not know (``fr``) is refused: overriding detection with it would do nothing."""
    if language is None:
        return None
    code = parse_language(language, field=field)
    if code is None and str(language).strip().lower() != "auto":
        raise InputError(
            f"{field}={language!r} is not a supported language: use one of {', '.join(SUPPORTED_LANGUAGES)} "
            "(or a tag such as zh-TW, ja-JP, ko-KR), or auto to detect it from the query"
        )
    return code


_HANGUL_RE: Final = re.compile(f"[{HANGUL}]")
_LETTER_RE: Final = re.compile(r"[^\W\d_]")
_DETECT_CHARS: Final = 1 << 18  # a long text is judged on its first 256k characters
# Chinese function characters that Japanese does not write (Japanese uses 為, 時, 個, 説, 対 instead)
_ZH_MARKER_RE: Final = re.compile("[们們这這个说說对對吗嗎呢么麼还为时]")
JA_HIRAGANA_SHARE: Final = 0.02
"""A text is Japanese when hiragana make up at least this share of its Han + kana characters."""


def detect_language(text: str) -> Language:
    """The language of a whole text (a document with its title, or a query), decided once from its scripts.

    * Hangul is at least as frequent as Han + kana -> ``"ko"`` (Korean writes hanja rarely);
    * hiragana are at least :data:`JA_HIRAGANA_SHARE` (2%) of the Han + kana characters and more than twice
      as frequent as Chinese-only function characters (们这个说对吗呢么还为时, Simplified or Traditional)
      -> ``"ja"``. Every Japanese sentence has particles and inflections in hiragana (JaQuAD passages: 7% to
      60%), so a Japanese document keeps this share even with kanji-only headings, tables and lists; a
      Chinese text that quotes Japanese titles can reach it (a CMRC 2018 passage: 4.7%, 11 hiragana) but
      then also has Chinese function characters (8 in that passage; JaQuAD passages have 0 to 3%);
    * kana without any Han -> ``"ja"``;
    * other text with Han or kana -> ``"zh"`` (Han alone cannot tell Chinese from Japanese: a caller that
      knows better passes ``language``; a query of Han alone is read both ways, see
      :meth:`~cjkrag.pipeline.analyzer.CJKAnalyzer.analyze_query`);
    * no CJK character at all -> ``"en"`` (any other script: analyzed as words either way).
    """
    sample = text[:_DETECT_CHARS]
    han = len(_HAN_RE.findall(sample))
    kana = len(_KANA_RE.findall(sample))
    hangul = len(_HANGUL_RE.findall(sample))
    if hangul and hangul >= han + kana:
        return "ko"
    if han + kana == 0:
        return "en"
    if han == 0:  # kana without Han: a katakana word or a hiragana-only line
        return "ja"
    hiragana = len(_HIRAGANA_RE.findall(sample))
    share_ok = hiragana and hiragana >= JA_HIRAGANA_SHARE * (han + kana)
    if share_ok and hiragana > 2 * len(_ZH_MARKER_RE.findall(sample)):
        return "ja"
    return "zh"
