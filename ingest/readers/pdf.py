"""PDF with pypdfium2 (extra ``pdf``): per page text lines with their boxes, then

- headers/footers (a line near the top/bottom edge that repeats, digits aside, on most pages) dropped;
- reading order from the glyphs' geometry (``pdf_layout``): vertical Japanese pages (縦書き) top to bottom
  within a column and columns right to left; any number of columns, read column by column, with
  full-width lines (titles, headers, a paragraph across the page) keeping their place between blocks;
  tables (short cells) row by row; pages listed in ``metadata["vertical_pages"]``;
- lines of a paragraph joined without a space between CJK characters and with one between Latin words;
- a page with no text layer, or whose text is garbage (a CID font without a ToUnicode map gives control,
  private-use or U+FFFD characters, or glyph ids read as letters of unrelated scripts), is rendered and
  OCR'd when an OCR engine is installed; else it is reported by page with the fix, and never indexed;
  stray control/private-use characters on a usable page are dropped;
- vertical text that pdfium cannot place (a non-embedded font missing on this machine) is reported by page.

Each paragraph is a span ``{"page": n, "section": [heading]}`` (a short line set in a font at least 1.2x the
body's is taken as the heading of what follows), so chunks cite their page and heading.
pypdfium2 was chosen over pdfplumber/pdfminer.six: both extract the generated CJK test PDFs exactly
(CER 0), pdfium ~20x faster (see README "Formats" and benchmarks/formats.py).
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Iterator
from typing import Any

from cjkrag.ingest.readers.base import (
    ReadContext,
    ReaderError,
    ReadFailure,
    TextBuilder,
    check_size,
    require,
)
from cjkrag.ingest.readers.pdf_layout import Line, lines_from_chars, page_paragraphs
from cjkrag.types import Document

_EDGE = 0.09  # top/bottom fraction of the page where running headers/footers live
_DIGITS_RE = re.compile(r"\d+")
_JUNK_RE = re.compile("[\ufffd\ue000-\uf8ff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: letters of these scripts are expected in CJK documents; letters of 3+ others on a page is mojibake
_EXPECTED_SCRIPTS = frozenset(
    {"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "LATIN", "FULLWIDTH", "HALFWIDTH", "IDEOGRAPHIC", "BOPOMOFO"})
_HEADING_RATIO = 1.2  # a short paragraph whose lines are this much taller than the body's is a heading
_MAX_HEADING = 60
_MIN_TEXT = 8  # fewer non-space characters than this on a page: treat it as having no text layer


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
        pages: list[list[Line]] = []
        lost: list[int] = []
        sizes: list[tuple[float, float]] = []
        for i in range(len(pdf)):
            page = pdf[i]
            pages.append(_page_lines(page))
            lost.append(_unplaced_runs(pdfium, page))
            sizes.append(page.get_size())
        repeated = _running_lines(pages, sizes)
        heights = [ln.height for lines in pages for ln in lines]
        body_height = statistics.median(heights) if heights else 0.0
        builder = TextBuilder()
        failures: list[ReadFailure] = []
        ocr_pages: list[int] = []
        vertical_pages: list[int] = []
        section: list[str] = []
        for number, (lines, (_width, height)) in enumerate(zip(pages, sizes, strict=True), start=1):
            body = [ln for ln in lines if not _is_running(ln, height, repeated)]
            paras, vertical = page_paragraphs(body, height)
            if vertical:
                vertical_pages.append(number)
            problem = unusable_text("\n".join(p for p, _ in paras))
            if lost[number - 1]:  # text pdfium could not place: not on the page's text layer, not rendered either
                failures.append(ReadFailure(
                    f"{ctx.source} p.{number}",
                    f"{lost[number - 1]} vertical text run(s) are set in a font that is neither embedded in the PDF nor "
                    "installed here, so they cannot be read" + ("" if problem else "; the rest of the page is indexed"),
                    "install CJK fonts (Debian: fonts-noto-cjk or fonts-ipafont) so they can be substituted, or "
                    "re-export the PDF with its fonts embedded",
                ))  # fmt: skip
                if problem:
                    continue
            if problem:
                ocr_text, why, fix = _ocr_page(ctx, pdf[number - 1], problem, vertical)
                if ocr_text is None:
                    failures.append(ReadFailure(f"{ctx.source} p.{number}", why, fix))
                    continue
                paras = [(ocr_text, 0.0)]
                ocr_pages.append(number)
            sep = "\n\n"  # between pages; "\n" between the paragraphs of a page
            for raw, para_height in paras:
                para = _JUNK_RE.sub("", raw)  # stray control/private-use/U+FFFD glyphs on a usable page
                if not para.strip():
                    continue
                if len(para) <= _MAX_HEADING and para_height >= _HEADING_RATIO * body_height > 0:
                    section = [para]  # a line in a larger font than the body: a heading
                info: dict[str, Any] = {"page": number, "section": list(section)} if section else {"page": number}
                builder.add(para, info, sep=sep)
                sep = "\n"
        meta_title = _meta_title(pdf)
    finally:
        pdf.close()
    yield from failures
    if not builder.text.strip():
        if failures:
            raise ReaderError("no page of this PDF has a usable text layer", _ocr_fix(ctx, failures[0].error))
        raise ReaderError("PDF has no text", "nothing to index", "skipped")
    meta: dict[str, Any] = {"format": "pdf", "pages": len(pages)}
    if ocr_pages:
        meta["ocr_pages"] = ocr_pages
    if vertical_pages:
        meta["vertical_pages"] = vertical_pages
    yield ctx.document(builder.text, title=meta_title, metadata=meta, spans=builder.spans)


def _ocr_fix(ctx: ReadContext, problem: str) -> str:
    if not ctx.ocr:
        fix = "OCR is off for this run; enable it to read such pages"
    else:
        fix = "install an OCR engine to read such pages: pip install 'cjkrag[ocr]' or Debian's tesseract-ocr"
    return fix + _reexport(problem)


def _reexport(problem: str) -> str:
    if "Unicode map" not in problem:
        return ""
    return ", or re-export the PDF with its fonts' Unicode maps (e.g. print to PDF with fonts embedded)"


def _unplaced_runs(pdfium: Any, page: Any) -> int:
    """Text objects that pdfium leaves off the text layer: a vertical run whose glyphs have no outline (a
    non-embedded CID font missing on this machine) gets a zero-width box, and pdfium skips such objects."""
    text_type = pdfium.raw.FPDF_PAGEOBJ_TEXT
    count = 0
    for obj in page.get_objects(filter=[text_type]):
        x0, y0, x1, y1 = obj.get_bounds()
        if x1 - x0 < 0.01 and y1 - y0 > 1.0:
            count += 1
    return count


def _page_lines(page: Any) -> list[Line]:
    import pypdfium2.raw as pdfium_raw

    tp = page.get_textpage()
    try:
        n = tp.count_chars()
        text = tp.get_text_range(0, n) if n else ""
        if len(text) != n:  # characters outside the BMP: pdfium counts UTF-16 units, fetch one by one
            text = "".join(tp.get_text_range(i, 1)[:1] or "\ufffd" for i in range(n))
        generated = {i for i in range(n) if text[i] == " " and pdfium_raw.FPDFText_IsGenerated(tp.raw, i) == 1}
        return lines_from_chars([(text[i], tp.get_charbox(i, loose=True)) for i in range(n)], generated)
    finally:
        tp.close()


def _norm(text: str) -> str:
    return _DIGITS_RE.sub("#", "".join(text.split()))


def _running_lines(pages: list[list[Line]], sizes: list[tuple[float, float]]) -> set[str]:
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


def _is_running(line: Line, height: float, repeated: set[str]) -> bool:
    at_edge = line.y0 > height * (1 - _EDGE) or line.y1 < height * _EDGE
    return at_edge and _norm(line.text) in repeated


def unusable_text(text: str) -> str:
    """Why a page's extracted text must not be indexed ("" when it is usable): no text layer, or the
    garbage a CID font without a ToUnicode map gives (control, private-use and replacement characters,
    or raw glyph ids read as code points, which scatter letters over unrelated alphabets)."""
    visible = [ch for ch in text if not ch.isspace()]
    if len(visible) < _MIN_TEXT:
        return "page has no text layer (a scan or an image)"
    bad = sum(1 for ch in visible if _is_junk(ch))
    if bad > 0.2 * len(visible):
        return (f"{bad} of {len(visible)} characters are control, private-use or replacement characters "
                "(a font without a Unicode map: its text cannot be extracted)")  # fmt: skip
    scripts = Counter(_script(ch) for ch in visible)
    foreign = {name: c for name, c in scripts.items() if name and name not in _EXPECTED_SCRIPTS}
    if len(foreign) >= 3 and sum(foreign.values()) > 0.3 * len(visible):
        names = ", ".join(sorted(foreign, key=lambda k: -foreign[k])[:4])
        return (f"{sum(foreign.values())} of {len(visible)} characters are letters of {len(foreign)} unrelated "
                f"scripts ({names}...): glyph ids read as text (a font without a Unicode map)")  # fmt: skip
    return ""


def _is_junk(ch: str) -> bool:
    return ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Co", "Cn", "Cs")


def _script(ch: str) -> str:
    """The first word of a letter's Unicode name (LATIN, CJK, HIRAGANA, CYRILLIC...); "" for non-letters."""
    if not unicodedata.category(ch).startswith("L"):
        return ""
    return unicodedata.name(ch, "UNKNOWN").split(" ")[0]


def _ocr_page(ctx: ReadContext, page: Any, problem: str, vertical: bool) -> tuple[str | None, str, str]:
    """(OCR text, "", "") or (None, why, fix). A vertical page is OCR'd only with a vertical model (a
    horizontal reading of 縦書き is garbage, and garbage is never indexed)."""
    if not ctx.ocr:
        return None, f"{problem}; OCR is off", _ocr_fix(ctx, problem)
    from cjkrag.ingest.readers import ocr

    if not ocr.available():
        return None, f"{problem}; no OCR engine is installed", _ocr_fix(ctx, problem)
    image = page.render(scale=300 / 72).to_pil()
    try:
        text = ocr.recognize(image, vertical=vertical)
    except ReaderError as exc:  # vertical page, no vertical model installed
        return None, f"{problem}; the page is vertical (縦書き): {exc.error}", exc.fix + _reexport(problem)
    if not text.strip():
        return None, f"{problem}; OCR found no text on it", _ocr_fix(ctx, problem)
    return text, "", ""


def _meta_title(pdf: Any) -> str:
    try:
        title = pdf.get_metadata_dict().get("Title", "")
    except Exception:  # metadata is optional; a broken info dict must not fail the file
        return ""
    return str(title).strip()
