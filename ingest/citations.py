"""Where a chunk came from: its page, slide, sheet and rows, and section heading path.

Readers attach a span map to the document (``Document.metadata["_spans"]``: ``[start, end, info]`` over
the extracted text, ``info`` holding ``page`` / ``slide`` / ``sheet`` + ``row_start``/``row_end`` /
``section``). :func:`chunk_metadata` resolves a chunk's ``[start, end)`` against it, so every stored chunk
(and so every ``Hit.metadata``) carries e.g. ``{"page": 12, "section": ["第3章 退货", "3.2 运费"]}``;
a chunk over several pages also gets ``page_end``. The span map itself is never stored per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cjkrag.types import Chunk, Document

SPANS_KEY = "_spans"
_NUMBERED = ("page", "slide")


def chunk_metadata(doc: Document, chunk: Chunk) -> dict[str, Any]:
    """The document's metadata (without the span map) plus the chunk's citation fields."""
    meta = {k: v for k, v in doc.metadata.items() if k != SPANS_KEY}
    spans = doc.metadata.get(SPANS_KEY)
    if spans:
        meta.update(cite(spans, chunk.start, chunk.end))
    return meta


def cite(spans: Sequence[Sequence[Any]], start: int, end: int) -> dict[str, Any]:
    """Citation fields of the text ``[start, end)`` given a span map (pure; spans may nest or overlap)."""
    hits = [(int(s), int(e), info) for s, e, info in spans if int(s) < end and int(e) > start]
    if not hits and spans:  # a chunk made only of separators between spans: cite the span before it
        before = [(int(s), int(e), info) for s, e, info in spans if int(e) <= start]
        hits = before[-1:]
    out: dict[str, Any] = {}
    for key in _NUMBERED:
        values = sorted({int(info[key]) for _, _, info in hits if key in info})
        if values:
            out[key] = values[0]
            if values[-1] != values[0]:
                out[f"{key}_end"] = values[-1]
    sheets = [info for _, _, info in hits if "sheet" in info]
    if sheets:
        out["sheet"] = sheets[0]["sheet"]
        rows = [info for info in sheets if info["sheet"] == out["sheet"]]
        out["row_start"] = min(int(info.get("row_start", info.get("row", 0))) for info in rows)
        out["row_end"] = max(int(info.get("row_end", info.get("row", 0))) for info in rows)
    sections: list[tuple[int, list[str]]] = [(s, list(info["section"])) for s, _, info in hits if info.get("section")]
    if sections:  # the heading path in force at the chunk's start (the latest span starting before it)
        preceding = [(s, sec) for s, sec in sections if s <= start] or sections[:1]
        out["section"] = max(preceding, key=lambda item: item[0])[1]
    for key in ("attachment", "speaker_notes"):
        if any(info.get(key) for _, _, info in hits):
            out[key] = next(info[key] for _, _, info in hits if info.get(key))
    return out
