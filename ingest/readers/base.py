"""What every reader shares: the failure type, the read context, CJK-aware line joining and span maps."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cjkrag.ingest.citations import SPANS_KEY
from cjkrag.types import Document

__all__ = [
    "SPANS_KEY", "MissingExtra", "ReadContext", "ReadFailure", "ReaderError", "TextBuilder", "is_cjk", "join_lines",
]  # fmt: skip

# ``Document.metadata[SPANS_KEY]``: ``[[start, end, {"page": 3, "section": [...]}], ...]`` over the text;
# ``cjkrag.ingest.citations`` turns it into each chunk's page/slide/sheet/section (never stored itself).


@dataclass(frozen=True)
class ReadFailure:
    """A file, line or record that gave no document, with why and how to fix it."""

    source: str  # path, ``path:line`` for a jsonl line, ``<record>[i]`` for a Python record
    error: str
    fix: str
    kind: Literal["failed", "skipped"] = "failed"

    def __str__(self) -> str:
        return f"{self.kind}: {self.source}: {self.error} ({self.fix})"


class ReaderError(Exception):
    """Raised inside a reader; becomes a :class:`ReadFailure` for the file (the job goes on)."""

    def __init__(self, error: str, fix: str, kind: Literal["failed", "skipped"] = "failed") -> None:
        super().__init__(error)
        self.error, self.fix, self.kind = error, fix, kind


class MissingExtra(ReaderError):
    """The optional dependency of a format is not installed."""

    def __init__(self, extra: str, package: str, what: str) -> None:
        super().__init__(
            f"reading {what} needs the '{package}' package, which is not installed",
            f"pip install 'cjkrag[{extra}]'",
        )


def check_size(ctx: ReadContext) -> int:
    """The file's size, or ReaderError when it cannot be read or is over ``ctx.max_bytes``."""
    try:
        size = ctx.path.stat().st_size
    except OSError as exc:
        raise ReaderError(f"cannot read: {exc.strerror}", "check the file's permissions") from None
    if size > ctx.max_bytes:
        raise ReaderError(
            f"file is {size:,} bytes, over the {ctx.max_bytes:,}-byte limit",
            "split it into smaller files, or pass a larger max_bytes (config ingest.max_file_bytes)",
        )
    return size


def require(module: str, extra: str, package: str, what: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtra` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(extra, package, what) from None


@dataclass(frozen=True)
class ReadContext:
    """Per-file settings handed to a format reader."""

    path: Path
    doc_id: str
    acl: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    public: bool = False
    max_bytes: int = 64 * 1024 * 1024
    encoding: str | None = None  # the user's --encoding for text files
    ocr: bool = True  # OCR image files and text-less PDF pages when the ocr extra is installed

    @property
    def source(self) -> str:
        return str(self.path)

    def document(
        self,
        text: str,
        *,
        title: str,
        metadata: Mapping[str, Any],
        spans: Sequence[tuple[int, int, Mapping[str, Any]]] = (),
        doc_id: str | None = None,
        source: str | None = None,
    ) -> Document:
        meta = dict(metadata)
        if spans:
            meta[SPANS_KEY] = [[s, e, dict(info)] for s, e, info in spans]
        return Document(
            id=doc_id or self.doc_id,
            text=text,
            title=title or self.path.stem,
            acl=self.acl,
            deny=self.deny,
            public=self.public,
            metadata=meta,
            source=source or self.source,
        )


def is_cjk(ch: str) -> bool:
    """A CJK ideograph, kana, Hangul syllable, CJK punctuation or full-width form."""
    return _is_cjk(ch)


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x2E80 <= o <= 0x9FFF  # radicals, punctuation, kana, Bopomofo, Hangul jamo compat, CJK ideographs
        or 0xAC00 <= o <= 0xD7A3  # Hangul syllables
        or 0xF900 <= o <= 0xFAFF
        or 0xFF00 <= o <= 0xFFEF  # full-width forms
        or 0x20000 <= o <= 0x3FFFF
    )


def join_lines(lines: Iterable[str]) -> str:
    """Join the lines of one paragraph: no space where either side is CJK (a Chinese/Japanese sentence
    broken across lines), one space between Latin words, and a hyphenated Latin word rejoined. Korean
    separates words with spaces, so a Hangul line break becomes a space."""
    out = ""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if not out:
            out = line
            continue
        a, b = out[-1], line[0]
        hangul = "\uac00" <= a <= "\ud7a3" and "\uac00" <= b <= "\ud7a3"
        if a == "-" and len(out) > 1 and out[-2].isalpha() and b.islower():
            out = out[:-1] + line
        elif (_is_cjk(a) or _is_cjk(b)) and not hangul:
            out += line
        else:
            out += " " + line
    return out


_WS_RE = re.compile(r"[ \t\u3000]+")


@dataclass
class TextBuilder:
    """Appends blocks of text separated by blank lines, recording each block's span and citation info."""

    parts: list[str] = field(default_factory=list)
    spans: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    length: int = 0

    def add(self, block: str, info: Mapping[str, Any] | None = None, sep: str = "\n\n") -> None:
        block = block.strip()
        if not block:
            return
        if self.parts:
            self.parts.append(sep)
            self.length += len(sep)
        start = self.length
        self.parts.append(block)
        self.length += len(block)
        if info:
            self.spans.append((start, self.length, dict(info)))

    @property
    def text(self) -> str:
        return "".join(self.parts)


def clean_cell(value: object) -> str:
    """A table cell on one line (cells are joined with `` | `` so their boundaries survive)."""
    return _WS_RE.sub(" ", str(value).replace("\r", " ").replace("\n", " ")).strip()
