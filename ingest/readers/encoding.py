"""Decode text bytes: BOMs, UTF-8, a declared or user-chosen encoding, else legacy CJK detection that
must be *evidently right* or the file is refused.

Legacy detection (issue 8a): every CJK codec that decodes the bytes cleanly gives a candidate text; each
candidate is scored, for each language (zh, zh-Hant, ja, ko), by the log-likelihood of its non-ASCII
characters under that language's character frequencies (``_charfreq``, measured on real text, backed off
to the standards' own "common character" levels: GB2312 level 1, Big5 frequent, JIS X 0208 level 1,
KS X 1001 Hangul). Mojibake is a sequence of individually possible but jointly improbable characters
(half-width katakana soup, rare Hangul, Bopomofo, simplified characters inside "Japanese"), so the right
decoding wins by many nats. The best candidate is used only when it beats every other distinct decoding
by :data:`MIN_MARGIN_NATS` in total and is plausible on its own; otherwise the file is reported with the
candidates and ``--encoding`` as the fix.
"""

from __future__ import annotations

import codecs
import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache

from cjkrag.errors import InputError
from cjkrag.ingest.readers.base import ReaderError

__all__ = ["CJK_ENCODINGS", "MIN_MARGIN_NATS", "Candidate", "decode_bytes", "rank_cjk_decodings"]

#: Legacy encodings tried when a file is not UTF-8 (supersets: cp932 ⊃ Shift_JIS, cp949 ⊃ EUC-KR,
#: big5hkscs ⊃ Big5, gb18030 ⊃ GBK ⊃ GB2312). Each is reported by this name.
CJK_ENCODINGS = ("gb18030", "big5", "big5hkscs", "cp932", "euc_jp", "cp949")
LANGUAGES = ("zh", "zh-Hant", "ja", "ko")
#: The winner must be this many nats (natural-log units of likelihood) ahead of the runner-up, in total
#: over the sample: e^6 ≈ 400 times more likely. Short files rarely reach it unless the text is clear.
MIN_MARGIN_NATS = 6.0
#: ... and on average no worse than this many nats per non-ASCII character (rare-but-real text scores
#: about 7-9; mojibake scores 11+).
MAX_MEAN_NATS = 10.5
_SAMPLE_BYTES = 64 * 1024
_UNSEEN_BITS = {1: 1.0, 2: 3.0, 3: 8.0}  # bits added past a language's rarest class, by backoff level
_SUSPICIOUS_RE = re.compile("[\ufffd\ue000-\uf8ff\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_BINARY_SIGNATURES = {
    b"%PDF": ("PDF", "name it .pdf and install the pdf extra: pip install 'cjkrag[pdf]'"),
    b"PK\x03\x04": ("ZIP container: docx/pptx/xlsx/zip", "give it its real extension (.docx/.pptx/.xlsx)"),
    b"\xd0\xcf\x11\xe0": ("old Office or Outlook .msg file", "save it as .docx/.xlsx/.pptx; name mail .msg"),
    b"\x89PNG": ("PNG image", "name it .png and install the ocr extra: pip install 'cjkrag[ocr]'"),
    b"\xff\xd8\xff": ("JPEG image", "name it .jpg and install the ocr extra: pip install 'cjkrag[ocr]'"),
}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Candidate:
    """One clean decoding of the sample and how plausible it is (lower ``nats`` = more plausible)."""

    encoding: str
    language: str
    nats: float  # total negative log-likelihood of the non-ASCII characters under ``language``
    chars: int  # non-ASCII characters scored

    @property
    def mean(self) -> float:
        return self.nats / max(self.chars, 1)


def decode_bytes(
    data: bytes, source: str = "<bytes>", declared: str | None = None, *, encoding: str | None = None
) -> tuple[str, str]:
    """``(text, encoding)`` for ``data``.

    In order: a byte-order mark (UTF-8/16/32); ``encoding`` chosen by the user (must decode cleanly);
    valid UTF-8; the ``declared`` encoding (an HTML ``<meta charset>``) if it decodes cleanly; else a
    legacy CJK encoding (GB18030, Big5, Shift_JIS/cp932, EUC-JP, EUC-KR/cp949) whose decoding is clearly
    the most plausible CJK text. The BOM is removed; nothing else is changed. Raises InputError naming
    ``source`` for binary data and for text that cannot be decoded confidently (with the likely candidates
    and ``--encoding`` as the fix)."""
    try:
        return decode(data, source, declared, encoding=encoding)
    except ReaderError as exc:
        raise InputError(f"{source}: {exc.error}; {exc.fix}") from None


def decode(
    data: bytes, source: str, declared: str | None = None, *, encoding: str | None = None
) -> tuple[str, str]:
    """Like :func:`decode_bytes` but raises :class:`ReaderError` (error, fix) for the readers."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError as exc:
                raise ReaderError(
                    f"starts with a {enc} byte-order mark but is not valid {enc} ({exc.reason} at byte {exc.start})",
                    "re-save it as UTF-8",
                ) from None
    if encoding:
        return _decode_as(data, encoding, source), _name(encoding)
    for sig, (what, fix) in _BINARY_SIGNATURES.items():
        if data.startswith(sig):
            raise ReaderError(f"binary file ({what})", fix)
    if b"\x00" in data:
        raise ReaderError(
            "binary file (contains NUL bytes); only text files are read",
            "if it is UTF-16 text without a byte-order mark, convert it: "
            f"`iconv -f UTF-16LE -t UTF-8 {source} > {source}.utf8`",
        )
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = f"{exc.reason} at byte {exc.start}"
    if declared:
        try:
            text = data.decode(declared)
            if not _SUSPICIOUS_RE.search(text):
                return text, _name(declared)
        except (UnicodeDecodeError, LookupError):
            pass
    ranked = rank_cjk_decodings(data[:_SAMPLE_BYTES])
    best = ranked[0] if ranked else None
    runner_up = ranked[1] if len(ranked) > 1 else None
    if (
        best is not None
        and best.mean <= MAX_MEAN_NATS
        and (runner_up is None or runner_up.nats - best.nats >= MIN_MARGIN_NATS)
    ):
        try:
            return data.decode(best.encoding), best.encoding
        except UnicodeDecodeError:
            pass  # the sample decoded, the rest does not: not this encoding after all
    raise ReaderError(
        f"not valid UTF-8 ({utf8_error}) and its encoding was not detected confidently"
        + (f" (candidates: {_describe(ranked)})" if ranked else " (no CJK encoding decodes it cleanly)"),
        f"re-run with --encoding {best.encoding if best else 'ENCODING'} (the file's real encoding), or "
        f"convert it: `iconv -f {(best.encoding if best else 'GB18030').upper()} -t UTF-8 {source} > {source}.utf8`",
    )


def rank_cjk_decodings(data: bytes) -> list[Candidate]:
    """Every distinct clean decoding of ``data`` by a CJK codec, most plausible first (each with the
    language it is most plausible as). Decodings with the same text (a codec and its superset) are merged,
    keeping the first codec of :data:`CJK_ENCODINGS`."""
    data = _trim_partial_tail(data)
    seen: dict[str, Candidate] = {}
    for enc in CJK_ENCODINGS:
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        if text in seen or _SUSPICIOUS_RE.search(text):
            continue
        chars = [ch for ch in text if ord(ch) > 0x7F and not ch.isspace()]
        if not chars:
            continue
        lang, nats = min(((lang, _nats(chars, lang)) for lang in LANGUAGES), key=lambda item: item[1])
        seen[text] = Candidate(enc, lang, nats, len(chars))
    return sorted(seen.values(), key=lambda c: c.nats)


def _trim_partial_tail(data: bytes) -> bytes:
    """A sample cut inside a multi-byte character: drop up to 3 trailing bytes that are not ASCII."""
    if len(data) < _SAMPLE_BYTES:
        return data
    end = len(data)
    while end > len(data) - 4 and end > 0 and data[end - 1] > 0x7F:
        end -= 1
    return data[:end]


def _nats(chars: list[str], lang: str) -> float:
    table = _bits_table(lang)
    unseen = _unseen_base(lang)
    total_bits = 0.0
    for ch in chars:
        bits = table.get(ch)
        if bits is None:
            bits = unseen + _UNSEEN_BITS[_backoff_level(ch, lang)]
        total_bits += bits
    return total_bits * math.log(2)


@cache
def _bits_table(lang: str) -> dict[str, float]:
    from cjkrag.ingest.readers._charfreq import CLASSES

    return {ch: float(k) for k, chars in CLASSES[lang].items() for ch in chars}


@cache
def _unseen_base(lang: str) -> float:
    from cjkrag.ingest.readers._charfreq import CLASSES

    return float(max(CLASSES[lang]))


@lru_cache(maxsize=65536)
def _backoff_level(ch: str, lang: str) -> int:
    """1: common in the language's own standard (GB2312 level 1, Big5 frequent, JIS level 1, KS X 1001
    Hangul, or ordinary punctuation/full-width forms), 2: encodable there but less common, 3: foreign to
    the language or junk (half-width katakana, compatibility jamo, Bopomofo, box drawing...)."""
    cat = unicodedata.category(ch)
    if "\uff61" <= ch <= "\uff9f" or "\u3131" <= ch <= "\u318f" or "\u3100" <= ch <= "\u312f":
        return 3  # half-width katakana / Hangul compatibility jamo / Bopomofo: mojibake signatures
    if cat.startswith("P") or "\uff01" <= ch <= "\uff5e":
        return 1 if ch in "、。，．・：；？！「」『』（）【】《》〈〉“”‘’…—～·" else 2
    if "\u3040" <= ch <= "\u30ff":
        return 1 if lang == "ja" else 3
    if "\uac00" <= ch <= "\ud7a3":
        if lang != "ko":
            return 3
        return 1 if _encodes(ch, "euc_kr") else 2
    if "\u4e00" <= ch <= "\u9fff":
        if lang == "zh":
            return 1 if _in_range(ch, "gb2312", 0xB0A1, 0xD7FE) else 2 if _encodes(ch, "gb2312") else 3
        if lang == "zh-Hant":
            return 1 if _in_range(ch, "big5", 0xA440, 0xC67E) else 2 if _encodes(ch, "big5") else 3
        if lang == "ja":
            return 1 if _in_range(ch, "shift_jis", 0x889F, 0x9872) else 2 if _encodes(ch, "shift_jis") else 3
        return 2 if _encodes(ch, "euc_kr") else 3  # Hanja: rare in modern Korean
    return 3


def _encodes(ch: str, enc: str) -> bool:
    try:
        ch.encode(enc)
    except UnicodeEncodeError:
        return False
    return True


def _in_range(ch: str, enc: str, lo: int, hi: int) -> bool:
    try:
        b = ch.encode(enc)
    except UnicodeEncodeError:
        return False
    return len(b) == 2 and lo <= int.from_bytes(b, "big") <= hi


def _decode_as(data: bytes, encoding: str, source: str) -> str:
    try:
        return data.decode(encoding)
    except LookupError:
        raise ReaderError(
            f"unknown encoding {encoding!r}", "use a Python codec name such as gb18030, big5, cp932, euc_jp, cp949"
        ) from None
    except UnicodeDecodeError as exc:
        ranked = rank_cjk_decodings(data[:_SAMPLE_BYTES])
        hint = f" (it looks like {ranked[0].encoding})" if ranked else ""
        raise ReaderError(
            f"not valid {encoding} ({exc.reason} at byte {exc.start}){hint}",
            "re-run with the file's real --encoding, or leave --encoding out to detect it",
        ) from None


def _name(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return encoding


def _describe(ranked: list[Candidate]) -> str:
    return ", ".join(f"{c.encoding} as {c.language} {c.nats:.0f} nats" for c in ranked[:3])
