"""PDF with pypdfium2 (extra ``pdf``): per page text lines with their boxes, then

- headers/footers (a line near the top/bottom edge that repeats, digits aside, on most pages) dropped;
- two-column pages read column by column (full-width lines keep their place between column blocks);
- lines of a paragraph joined without a space between CJK characters and with one between Latin words;
- a page with no text layer, or whose text is mojibake (a CID font without a ToUnicode map gives
  private-use / control characters), is rendered and OCR'd when the ``ocr`` extra is installed; else it is
  reported by page and the other pages are kept.

Each paragraph is a span ``{"page": n, "section": [heading]}`` (a short line set in a font at least 1.2x the
body's is taken as the heading of what follows), so chunks cite their page and heading.
pypdfium2 was chosen over pdfplumber/pdfminer.six: both extract the generated CJK test PDFs exactly
(CER 0), pdfium ~20x faster (see README "Formats" and benchmarks/formats.py).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cjkrag.ingest.readers.base import (
    ReadContext,
    ReaderError,
    ReadFailure,
    TextBuilder,
    check_size,
    join_lines,
    require,
)
from cjkrag.types import Document

_EDGE = 0.09  # top/bottom fraction of the page where running headers/footers live
_DIGITS_RE = re.compile(r"\d+")
_BAD_RE = re.compile("[\ufffd\ue000-\uf8ff\x00-\x08\x0b\x0c\x0e-\x1f]")
_HEADING_RATIO = 1.2  # a short paragraph whose lines are this much taller than the body's is a heading
_MAX_HEADING = 60
_MIN_TEXT = 8  # fewer non-space characters than this on a page: treat it as having no text layer


@dataclass
class _Line:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return max(self.y1 - self.y0, 1.0)


def read_pdf(ctx: ReadContext) -> Iterator[Document | ReadFailure]:
    pdfium = require("pypdfium2", "pdf", "pypdfium2", "PDF files")
    check_size(ctx)
    try:
        pdf = pdfium.PdfDocument(str(ctx.path))
    except pdfium.PdfiumError as exc:
        msg = str(exc)
        if "password" in msg.lower():
            raise ReaderError(
                "encrypted PDF (password protected)", "save an unprotected copy (e.g. `qpdf --decrypt`) and ingest that"
            ) from None
        raise ReaderError(f"not a readable PDF ({msg})", "re-export or repair it (e.g. `qpdf in.pdf out.pdf`)") from None
    try:
        pages = [_page_lines(pdf[i]) for i in range(len(pdf))]
        sizes = [pdf[i].get_size() for i in range(len(pdf))]
        repeated = _running_lines(pages, sizes)
        heights = [ln.height for lines in pages for ln in lines]
        body_height = statistics.median(heights) if heights else 0.0
        builder = TextBuilder()
        failures: list[ReadFailure] = []
        ocr_pages: list[int] = []
        section: list[str] = []
        for number, (lines, (width, height)) in enumerate(zip(pages, sizes, strict=True), start=1):
            body = [ln for ln in lines if not _is_running(ln, height, repeated)]
            paragraphs = _paragraphs(body, width)
            if _needs_ocr("\n".join(p for p, _ in paragraphs)):
                ocr_text, why = _ocr_page(ctx, pdf[number - 1])
                if ocr_text is None:
                    failures.append(ReadFailure(f"{ctx.source} p.{number}", why, _ocr_fix(ctx)))
                    continue
                paragraphs = [(ocr_text, 0.0)]
                ocr_pages.append(number)
            for i, (para, para_height) in enumerate(paragraphs):
                if len(para) <= _MAX_HEADING and para_height >= _HEADING_RATIO * body_height > 0:
                    section = [para]  # a line in a larger font than the body: a heading
                info: dict[str, Any] = {"page": number, "section": list(section)} if section else {"page": number}
                builder.add(para, info, sep="\n" if i else "\n\n")
        meta_title = _meta_title(pdf)
    finally:
        pdf.close()
    yield from failures
    if not builder.text.strip():
        if failures:
            raise ReaderError("no page of this PDF has a usable text layer", _ocr_fix(ctx))
        raise ReaderError("PDF has no text", "nothing to index", "skipped")
    meta: dict[str, Any] = {"format": "pdf", "pages": len(pages)}
    if ocr_pages:
        meta["ocr_pages"] = ocr_pages
    yield ctx.document(builder.text, title=meta_title, metadata=meta, spans=builder.spans)


def _ocr_fix(ctx: ReadContext) -> str:
    if not ctx.ocr:
        return "OCR is off for this run; enable it to read scanned pages"
    return "install the ocr extra to read scanned pages: pip install 'cjkrag[ocr]'"


def _page_lines(page: Any) -> list[_Line]:
    tp = page.get_textpage()
    try:
        n = tp.count_chars()
        text = tp.get_text_range(0, n) if n else ""
        lines: list[_Line] = []
        start = 0
        for part in text.split("\n"):
            end = min(start + len(part), n)
            lines.extend(_split_at_gaps([(part[i - start], tp.get_charbox(i, loose=True)) for i in range(start, end)]))
            start = start + len(part) + 1
        return lines
    finally:
        tp.close()


def _split_at_gaps(chars: list[tuple[str, tuple[float, float, float, float]]]) -> list[_Line]:
    """One pdfium text line as one or more lines: text on the same baseline but separated by a wide gap
    (two columns, a table's cells far apart) is split there."""
    out: list[_Line] = []
    seg: list[tuple[str, tuple[float, float, float, float]]] = []
    last: tuple[float, float, float, float] | None = None
    for ch, box in chars:
        if ch in "\r\n":
            continue
        if not ch.isspace():
            if last is not None and box[0] - last[2] > 2.5 * max(last[3] - last[1], 4.0):
                out.extend(_make_line(seg))
                seg = []
            last = box
        seg.append((ch, box))
    out.extend(_make_line(seg))
    return out


def _make_line(seg: list[tuple[str, tuple[float, float, float, float]]]) -> list[_Line]:
    boxes = [b for ch, b in seg if not ch.isspace()]
    text = "".join(ch for ch, _ in seg).strip()
    if not text or not boxes:
        return []
    return [_Line(text, min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))]


def _norm(text: str) -> str:
    return _DIGITS_RE.sub("#", "".join(text.split()))


def _running_lines(pages: list[list[_Line]], sizes: list[tuple[float, float]]) -> set[str]:
    """Normalized texts of lines at the page edges that appear on at least half the pages (min 2)."""
    if len(pages) < 2:
        return set()
    counts: dict[str, int] = {}
    for lines, (_, height) in zip(pages, sizes, strict=True):
        edge = {_norm(ln.text) for ln in lines if ln.y0 > height * (1 - _EDGE) or ln.y1 < height * _EDGE}
        for key in edge:
            counts[key] = counts.get(key, 0) + 1
    need = max(2, (len(pages) + 1) // 2)
    return {key for key, c in counts.items() if c >= need}


def _is_running(line: _Line, height: float, repeated: set[str]) -> bool:
    at_edge = line.y0 > height * (1 - _EDGE) or line.y1 < height * _EDGE
    return at_edge and _norm(line.text) in repeated


def _paragraphs(lines: list[_Line], width: float) -> list[tuple[str, float]]:
    """(paragraph, its tallest line) in reading order (two columns when the page has them)."""
    if not lines:
        return []
    mid = width / 2
    left = [ln for ln in lines if ln.x1 <= mid + 2]
    right = [ln for ln in lines if ln.x0 >= mid - 2]
    two_columns = len(left) >= 3 and len(right) >= 3 and len(left) + len(right) >= 0.6 * len(lines)
    ordered: list[list[_Line]] = []  # blocks, each read top to bottom
    if two_columns:
        block_l: list[_Line] = []
        block_r: list[_Line] = []
        for ln in sorted(lines, key=lambda ln: -ln.y1):
            if ln.x1 <= mid + 2:
                block_l.append(ln)
            elif ln.x0 >= mid - 2:
                block_r.append(ln)
            else:  # a full-width line (title, figure caption): closes the column block above it
                ordered.extend([block_l, block_r])
                ordered.append([ln])
                block_l, block_r = [], []
        ordered.extend([block_l, block_r])
    else:
        ordered = [lines]  # pdfium's own order follows the content stream, usually the reading order
    paragraphs: list[tuple[str, float]] = []
    for block in ordered:
        current: list[_Line] = []
        seq: list[_Line | None] = [*block, None]  # None: end of the block
        for item in seq:
            if current and (item is None or not _same_paragraph(current[-1], item)):
                text = join_lines(x.text for x in current)
                if text:
                    paragraphs.append((text, max(x.height for x in current)))
                current = []
            if item is not None:
                current.append(item)
    return paragraphs


def _same_paragraph(prev: _Line, line: _Line) -> bool:
    gap = prev.y0 - line.y1  # vertical space between the two lines (PDF y grows upwards)
    return -0.5 * prev.height <= gap <= 0.8 * max(prev.height, line.height) and abs(prev.x0 - line.x0) < 3 * prev.height


def _needs_ocr(text: str) -> bool:
    visible = [ch for ch in text if not ch.isspace()]
    if len(visible) < _MIN_TEXT:
        return True
    return len(_BAD_RE.findall(text)) > 0.2 * len(visible)


def _ocr_page(ctx: ReadContext, page: Any) -> tuple[str | None, str]:
    if not ctx.ocr:
        return None, "page has no usable text layer (scanned, or a font without a Unicode map)"
    from cjkrag.ingest.readers import ocr

    if not ocr.available():
        return None, "page has no usable text layer (scanned, or a font without a Unicode map) and OCR is not installed"
    image = page.render(scale=300 / 72).to_pil()
    text = ocr.recognize(image)
    if not text.strip():
        return None, "page has no text layer and OCR found no text on it"
    return text, ""


def _meta_title(pdf: Any) -> str:
    try:
        title = pdf.get_metadata_dict().get("Title", "")
    except Exception:  # metadata is optional; a broken info dict must not fail the file
        return ""
    return str(title).strip()
