"""Token-budgeted CJK-aware chunking.

``chunk_text`` cuts a document into overlapping spans that each fit the embedding model's input as
counted by the model's own tokenizer (prefix and special tokens included). It tokenizes the text once
(per block of ``_BLOCK_CHARS`` characters for very long documents) with ``token_offsets``, works on
token positions, and calls ``count_tokens`` only to verify each candidate chunk (shrinking it when the
tokenization at its edges differs from the whole-document tokenization).

Where a chunk ends, in order of preference: a sentence end (。！？；… ． ｡, and ASCII ``. ! ?`` before
whitespace or CJK text; closing quotes/brackets and the following whitespace stay with their sentence)
or a paragraph break; a newline; a comma (，、,); whitespace; and finally a hard split at a token
boundary that does not cut a grapheme cluster (combining marks, ZWJ emoji sequences, flags, Hangul
jamo, ``\\r\\n``) where one exists. Chunks start right after such a boundary too (the overlap is
snapped to one when one lies within about ``overlap_tokens / 2 .. 2 * overlap_tokens`` tokens).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cjkrag.errors import ConfigError
from cjkrag.types import Chunk, Document

__all__ = [
    "TokenCounter",
    "chunk_context",
    "chunk_text",
    "context_tokens",
    "fit_context",
    "is_grapheme_break",
    "keyword_text",
    "with_context",
    "with_language",
]


@runtime_checkable
class TokenCounter(Protocol):
    """What the chunker needs from a tokenizer (the Embedder protocol satisfies it)."""

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text`` as a passage: prefix and special tokens included."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text``'s tokens (no prefix, no special tokens), in order."""


# A chunk should reach at least this share of the token budget before a "nice" boundary is taken;
# below it the next tier is tried, and finally a hard split at the budget.
_MIN_FILL = 0.5
# Documents longer than this are tokenized block by block (keeps memory flat on 50 MB files).
_BLOCK_CHARS = 1 << 18

_CLOSERS = "」』”’）)］]】》〉〕〗〙〛\"'»›｣"
# Tier 0: sentence ends (plus trailing closers and whitespace) and paragraph breaks.
_SENTENCE_RE = re.compile(
    rf"(?:[。！？；…‼⁇⁈⁉．｡]+[{re.escape(_CLOSERS)}]*\s*"
    # ASCII . ! ? end a sentence only before whitespace, the end or a non-ASCII character (not in 5.2,
    # example.com or /api?page=2)
    rf"|[.!?]+[{re.escape(_CLOSERS)}]*(?:\s+|$|(?=[^\x00-\x7f])))"
)
_PARAGRAPH_RE = re.compile(r"\n[^\S\n]*\n\s*")
# Tier 1: a newline (with the whitespace that follows it).
_NEWLINE_RE = re.compile(r"\n\s*")
# Tier 2: commas (ASCII comma not between digits, so 1,000 stays whole).
_COMMA_RE = re.compile(r"(?:[，、､﹐﹑]+|(?<!\d),|,(?!\d))\s*")
# Tier 3: any whitespace run.
_SPACE_RE = re.compile(r"\s+")
_TRAILING_SPACE_RE = re.compile(r"\s+\Z")

_TIERS: tuple[tuple[re.Pattern[str], ...], ...] = (
    (_SENTENCE_RE, _PARAGRAPH_RE),
    (_NEWLINE_RE,),
    (_COMMA_RE,),
    (_SPACE_RE,),
)


def with_language(doc: Document) -> Document:
    """``doc`` with its language decided once for all its chunks: the record's own ``language``, else the one
    detected from its title and text (:func:`cjkrag.pipeline.analyzer.detect_language`). Every chunk is then
    analyzed, and stored, with the document's language: a kanji-only chunk of a Japanese document (a
    heading, a table) is Japanese, not Chinese."""
    if doc.language:
        return doc
    from dataclasses import replace

    from cjkrag.pipeline.analyzer.normalize import detect_language

    return replace(doc, language=detect_language(f"{doc.title}\n{doc.text}"))


def chunk_context(doc: Document, chunk: Chunk | None = None) -> str:
    """What a chunk is part of: the document title and, where the reader recorded one, the section heading
    path of the chunk (``metadata["sections"]``: ``[{"start": offset, "path": ["Manual", "Install"]}, ...]``,
    sorted by ``start``; the chunk gets the last section that starts at or before it). One line, ``" > "``
    between levels; ``""`` when the document has neither."""
    parts = [doc.title.strip()] if doc.title and doc.title.strip() else []
    sections = doc.metadata.get("sections") if chunk is not None else None
    current: object = None
    if chunk is not None and isinstance(sections, list):
        for entry in sections:
            if isinstance(entry, dict) and isinstance(entry.get("start"), int) and entry["start"] <= chunk.start:
                current = entry.get("path")
    elif chunk is not None and doc.metadata.get("_spans"):  # the PDF/Office/e-mail readers' span map
        from cjkrag.ingest.citations import SPANS_KEY, cite

        current = cite(doc.metadata[SPANS_KEY], chunk.start, chunk.end).get("section")
    if chunk is not None:
        if isinstance(current, str):
            current = [current]
        if isinstance(current, list):
            parts += [str(p).strip() for p in current if str(p).strip() and str(p).strip() != (parts or [""])[0]]
    return " > ".join(" ".join(p.split()) for p in parts)


def with_context(context: str, text: str) -> str:
    """The text a model or the keyword index sees for a chunk: its context line, then the body. The stored
    chunk ``text``, offsets and citations stay the body alone."""
    return f"{context}\n{text}" if context else text


def keyword_text(doc: Document, chunk: Chunk) -> str:
    """What the keyword index analyzes for ``chunk``: its context line (title, section path) and its body.
    Measured with bm25s over the analyzer's terms (title + body vs body, nDCG@10, every query): cmrc2018
    passages 0.9871 vs 0.9835, JaQuAD 0.9171 vs 0.9161, XQuAD-zh 0.9624 vs 0.9622 (k1 = 1.2, b = 0.75)."""
    return with_context(chunk_context(doc, chunk), chunk.text)


def context_tokens(doc: Document, tokenizer: TokenCounter) -> int:
    """Tokens the longest context line of ``doc`` adds to a chunk (subtract it from the chunk budget, so a
    chunk with its context still fits the model and nothing is truncated)."""
    lines = {chunk_context(doc)}
    sections = doc.metadata.get("sections")
    if isinstance(sections, list):
        for entry in sections:
            if isinstance(entry, dict) and isinstance(entry.get("start"), int):
                lines.add(chunk_context(doc, Chunk("", entry["start"], entry["start"], 0, 0)))
    lines.discard("")
    if not lines:
        return 0
    base = tokenizer.count_tokens("x")
    return max(tokenizer.count_tokens(with_context(line, "x")) - base for line in lines)


def fit_context(line: str, tokenizer: TokenCounter, limit: int) -> str:
    """``line`` cut (at a token boundary) so that it adds at most ``limit`` tokens before a chunk's body."""
    base = tokenizer.count_tokens("x")

    def cost(s: str) -> int:
        return tokenizer.count_tokens(with_context(s, "x")) - base if s else 0

    if cost(line) <= limit:
        return line
    ends = [e for _, e in tokenizer.token_offsets(line)]
    lo, hi = 0, len(ends)  # the longest prefix of whole tokens that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(line[: ends[mid - 1]].rstrip()) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return line[: ends[lo - 1]].rstrip() if lo else ""


def chunk_text(
    text: str, tokenizer: TokenCounter, max_tokens: int = 512, overlap_tokens: int = 64
) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens (as ``tokenizer.count_tokens`` counts).

    Consecutive chunks overlap by about ``overlap_tokens`` tokens (snapped to a boundary where one is
    near). ``chunk.text == text[chunk.start:chunk.end]``; the first chunk starts at 0, the last ends at
    ``len(text)``, starts strictly increase and no chunk starts after the previous one ends.
    Whitespace-only text gives ``[]``.
    """
    overhead = _validate(tokenizer, max_tokens, overlap_tokens)
    if not text or text.isspace():
        return []
    return _Chunker(text, tokenizer, max_tokens, overlap_tokens, overhead).run()


def _validate(tokenizer: TokenCounter, max_tokens: int, overlap_tokens: int) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise ConfigError(f"chunking.max_tokens must be an integer, got {max_tokens!r}")
    if isinstance(overlap_tokens, bool) or not isinstance(overlap_tokens, int) or overlap_tokens < 0:
        raise ConfigError(f"chunking.overlap_tokens must be an integer >= 0, got {overlap_tokens!r}")
    overhead = tokenizer.count_tokens("")
    if max_tokens <= overhead:
        raise ConfigError(
            f"chunking.max_tokens={max_tokens} leaves no room for text: the model adds {overhead} tokens "
            f"(prefix + special tokens) to every passage; set chunking.max_tokens above {overhead} "
            "(typically the model's limit, e.g. 512)"
        )
    budget = max_tokens - overhead
    if overlap_tokens * 2 >= max_tokens or (overlap_tokens > 0 and overlap_tokens * 2 >= budget):
        raise ConfigError(
            f"chunking.overlap_tokens={overlap_tokens} is too large: it must be less than half of "
            f"chunking.max_tokens minus the {overhead} prefix/special tokens ({budget} text tokens); "
            f"use at most {max(0, (budget - 1) // 2)}"
        )
    return overhead


# --------------------------------------------------------------------------------------- graphemes


def _hangul_kind(cp: int) -> str:
    if 0x1100 <= cp <= 0x115F or 0xA960 <= cp <= 0xA97F:
        return "L"
    if 0x1160 <= cp <= 0x11A7 or 0xD7B0 <= cp <= 0xD7C6:
        return "V"
    if 0x11A8 <= cp <= 0x11FF or 0xD7CB <= cp <= 0xD7FB:
        return "T"
    if 0xAC00 <= cp <= 0xD7A3:
        return "LV" if (cp - 0xAC00) % 28 == 0 else "LVT"
    return ""


def _is_extend(ch: str) -> bool:
    cp = ord(ch)
    if cp == 0x200D or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F:
        return True  # ZWJ, emoji skin-tone modifiers, emoji tag characters
    return unicodedata.category(ch) in ("Mn", "Me", "Mc")  # combining marks, variation selectors


def is_grapheme_break(text: str, i: int) -> bool:
    """Whether cutting ``text`` at index ``i`` keeps grapheme clusters whole (a cheap approximation
    of UAX #29: CR LF, combining marks, ZWJ sequences, emoji modifiers, flags, Hangul jamo)."""
    if i <= 0 or i >= len(text):
        return True
    a, b = text[i - 1], text[i]
    if a == "\r" and b == "\n":
        return False
    if _is_extend(b) or ord(a) == 0x200D:
        return False
    ka, kb = _hangul_kind(ord(a)), _hangul_kind(ord(b))
    if ka and kb:
        if ka == "L" and kb in ("L", "V", "LV", "LVT"):
            return False
        if ka in ("V", "LV") and kb in ("V", "T"):
            return False
        if ka in ("T", "LVT") and kb == "T":
            return False
    if 0x1F1E6 <= ord(a) <= 0x1F1FF and 0x1F1E6 <= ord(b) <= 0x1F1FF:
        run = 0
        j = i - 1
        while j >= 0 and 0x1F1E6 <= ord(text[j]) <= 0x1F1FF:
            run += 1
            j -= 1
        return run % 2 == 0
    return True


# ------------------------------------------------------------------------------------------ chunker


class _Chunker:
    def __init__(
        self, text: str, tokenizer: TokenCounter, max_tokens: int, overlap: int, overhead: int
    ) -> None:
        self.text = text
        self.tok = tokenizer
        self.max_tokens = max_tokens
        self.budget = max_tokens - overhead
        self.overlap = overlap
        # Candidate boundaries per tier (sorted char positions where a chunk may end or start) and
        # token spans, both for the current block of text.
        self.tiers: list[list[int]] = []
        self.block_start = 0
        self.block_end = 0
        self.starts: list[int] = []
        self.ends: list[int] = []

    # -- tokens ---------------------------------------------------------------------------------
    def _tokenize_block(self, begin: int, min_tokens: int) -> None:
        """Tokenize text[begin:...] in a block holding at least ``min_tokens`` tokens (or to the end)."""
        size = _BLOCK_CHARS
        n = len(self.text)
        while True:
            end = n if n - begin <= size + size // 4 else begin + size
            if end < n:  # end the block on whitespace when one is near, to keep words whole
                ws = self.text.rfind(" ", end - 256, end)
                nl = self.text.rfind("\n", end - 256, end)
                cut = max(ws, nl)
                if cut > begin:
                    end = cut
                while end > begin + 1 and not is_grapheme_break(self.text, end):
                    end -= 1
            offsets = self.tok.token_offsets(self.text[begin:end])
            if len(offsets) >= min_tokens or end >= n:
                break
            size *= 2
        starts, ends = _monotonic_spans(offsets, begin)
        self.block_start, self.block_end = begin, end
        self.starts, self.ends = starts, ends
        self.tiers = [_boundaries(self.text, pats, begin, end) for pats in _TIERS]

    def _ensure_tokens(self, s: int) -> int:
        """Token index of the first token starting at or after ``s``; re-blocks when needed."""
        if s < self.block_start or (not self.starts and self.block_end < len(self.text)):
            self._tokenize_block(s, self.budget + 1)
        i0 = bisect_left(self.starts, s)
        if self.block_end < len(self.text) and len(self.starts) - i0 < 2 * self.budget + 2:
            self._tokenize_block(s, 2 * self.budget + 2)
            i0 = bisect_left(self.starts, s)
        return i0

    def _token_limit_char(self, i0: int, ntok: int) -> int:
        """Largest char position such that text[s:pos] holds at most ``ntok`` tokens from ``i0``."""
        te = i0 + ntok
        if te < len(self.starts):
            return self.starts[te]
        return self.block_end

    # -- boundaries -----------------------------------------------------------------------------
    def _best_boundary(self, lo: int, hi: int) -> int | None:
        """Latest boundary in (lo, hi] of the best tier that has one."""
        for cands in self.tiers:
            j = bisect_right(cands, hi) - 1
            while j >= 0 and cands[j] > lo:
                if is_grapheme_break(self.text, cands[j]):
                    return cands[j]
                j -= 1
        return None

    def _hard_split(self, s: int, i0: int, hi: int) -> int:
        """Latest token end in (s, hi] that is a grapheme break; failing that, a code point cut."""
        k = bisect_right(self.ends, hi) - 1
        fallback = None
        while k >= i0 and self.ends[k] > s:
            pos = self.ends[k]
            if is_grapheme_break(self.text, pos):
                return pos
            if fallback is None and not (self.text[pos - 1] == "\r" and self.text[pos] == "\n"):
                fallback = pos
            k -= 1
        if fallback is not None:
            return fallback
        # No token end fits: cut at the first grapheme break after s (the caller verifies the count).
        pos = s + 1
        while pos < len(self.text) and not is_grapheme_break(self.text, pos):
            pos += 1
        return min(pos, max(hi, s + 1))

    def _choose_end(self, s: int, prev_end: int, ntok: int) -> int:
        i0 = self._ensure_tokens(s)
        hi = self._token_limit_char(i0, ntok)
        if hi >= len(self.text):
            return len(self.text)
        fill = max(1, int(ntok * _MIN_FILL))
        lo = max(prev_end, self.ends[i0 + fill - 1] - 1 if i0 + fill - 1 < len(self.ends) else s, s)
        b = self._best_boundary(lo, hi) if hi > lo else None
        if b is None:
            b = self._hard_split(s, i0, hi)
        return b

    def _fit(self, s: int, prev_end: int) -> tuple[int, int]:
        """End of the chunk starting at ``s`` and its verified token count."""
        ntok = self.budget
        while True:
            b = self._choose_end(s, prev_end, ntok)
            count = self.tok.count_tokens(self.text[s:b])
            if count <= self.max_tokens:
                return b, count
            i0 = self._ensure_tokens(s)
            have = bisect_right(self.ends, b) - i0
            new_ntok = min(ntok, have) - (count - self.max_tokens)
            if new_ntok >= ntok:
                new_ntok = ntok - 1
            if new_ntok < 1:
                return self._smallest_unit(s)
            ntok = new_ntok

    def _smallest_unit(self, s: int) -> tuple[int, int]:
        """The shortest chunk from ``s``: a grapheme cluster, else one code point (never inside \\r\\n)."""
        n = len(self.text)
        pos = s + 1
        while pos < n and not is_grapheme_break(self.text, pos):
            pos += 1
        count = self.tok.count_tokens(self.text[s:pos])
        if count > self.max_tokens:
            pos = s + 2 if self.text[s] == "\r" and self.text[s + 1 : s + 2] == "\n" else s + 1
            count = self.tok.count_tokens(self.text[s:pos])
            if count > self.max_tokens:
                raise ConfigError(
                    f"chunking.max_tokens={self.max_tokens} is too small: the text at offset {s} "
                    f"({self.text[s:pos]!r}) alone takes {count} tokens; raise chunking.max_tokens"
                )
        return pos, count

    def _next_start(self, s: int, b: int) -> int:
        if self.overlap == 0 or b >= len(self.text):
            return b
        i0 = self._ensure_tokens(s)
        i_end = bisect_right(self.ends, b)  # tokens in [.., b)
        if i_end - i0 < 2:
            return b
        target_i = max(i0 + 1, i_end - self.overlap)
        near_i = max(i0 + 1, i_end - self.overlap // 2)  # overlap at least ~half the request
        far_i = max(i0 + 1, i_end - self.overlap * 2, i_end - self.budget // 2)
        target = self.starts[target_i]
        lo, hi = self.starts[far_i] - 1, self.starts[near_i]
        best: int | None = None
        for cands in self.tiers:
            j = bisect_right(cands, hi) - 1
            while j >= 0 and cands[j] > lo:
                c = cands[j]
                if (
                    s < c < b
                    and (best is None or abs(c - target) < abs(best - target))
                    and is_grapheme_break(self.text, c)
                ):
                    best = c
                if c < target:
                    break
                j -= 1
            if best is not None:
                return best
        for i in range(target_i, i_end):  # no boundary near: a token start that keeps graphemes whole
            pos = self.starts[i]
            if s < pos < b and is_grapheme_break(self.text, pos):
                return pos
        return b

    def run(self) -> list[Chunk]:
        text = self.text
        chunks: list[Chunk] = []
        s = 0
        prev_end = 0
        while True:
            b, count = self._fit(s, prev_end)
            if b < len(text) and _TRAILING_SPACE_RE.match(text, b):
                tail = self.tok.count_tokens(text[s:])
                if tail <= self.max_tokens:
                    b, count = len(text), tail
            chunks.append(Chunk(text=text[s:b], start=s, end=b, index=len(chunks), token_count=count))
            if b >= len(text):
                return chunks
            s_next = self._next_start(s, b)
            if s_next <= s:  # cannot happen by construction; guard the loop anyway
                s_next = b
            s, prev_end = s_next, b


def _boundaries(text: str, patterns: Sequence[re.Pattern[str]], begin: int, end: int) -> list[int]:
    """Sorted positions in (begin, end] right after a match of ``patterns`` (graphemes are checked when a
    boundary is used). The search runs a little past ``end`` so that a match is not faked by the cut."""
    n = len(text)
    stop = n if end >= n else min(n, end + 64)
    if len(patterns) == 1:
        return [e for m in patterns[0].finditer(text, begin, stop) if begin < (e := m.end()) <= end and e < n]
    out: set[int] = set()
    for pat in patterns:
        out.update(e for m in pat.finditer(text, begin, stop) if begin < (e := m.end()) <= end and e < n)
    return sorted(out)


def _monotonic_spans(offsets: list[tuple[int, int]], begin: int) -> tuple[list[int], list[int]]:
    """Absolute token starts and ends, made non-decreasing (some tokenizers give overlapping spans, e.g.
    SentencePiece's prepended ``▁`` shares the first character's span) with ``end >= start``."""
    if not offsets:
        return [], []
    from itertools import chain

    import numpy as np

    flat = np.fromiter(chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets))
    arr = flat.reshape(-1, 2) + begin
    starts = np.maximum.accumulate(arr[:, 0])
    ends = np.maximum.accumulate(np.maximum(arr[:, 1], starts))
    return starts.tolist(), ends.tolist()
