"""Word, PowerPoint and Excel (extra ``office``: python-docx, python-pptx, openpyxl).

- .docx: paragraphs and tables in document order; Heading/Title styles (and outline levels) become the
  section path of what follows; a table row is one line with cells joined by `` | ``.
- .pptx: one block per slide: the title, the other text frames and tables, then the speaker notes
  (``备注/Notes:``); each slide is a span ``{"slide": n}`` with its title as section.
- .xlsx: one block per sheet; every data row is written as ``header: value`` pairs so a chunk cut in the
  middle of a sheet still says what each value is; spans carry ``sheet`` and ``row_start``/``row_end``.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from typing import Any

from cjkrag.ingest.readers.base import ReadContext, ReaderError, TextBuilder, check_size, clean_cell, require
from cjkrag.types import Document

_HEADING_RE = re.compile(r"^(?:heading|标题|見出し|제목)\s*(\d)$", re.IGNORECASE)
_MAX_ROWS = 200_000
_MAX_INFLATE = 4  # uncompressed parts may be this many times ingest.max_file_bytes


def _open_zip(ctx: ReadContext, what: str) -> None:
    check_size(ctx)
    if not zipfile.is_zipfile(ctx.path):
        encrypted = ctx.path.read_bytes()[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        if encrypted:
            raise ReaderError(
                f"{what} is encrypted (password protected) or in the old binary format",
                "save an unprotected copy in the current format (.docx/.pptx/.xlsx) and ingest that",
            )
        raise ReaderError(f"not a valid {what} (not a ZIP container: damaged or misnamed)", "re-save it")
    with zipfile.ZipFile(ctx.path) as z:  # a zip bomb must not exhaust memory when the library inflates it
        inflated = sum(info.file_size for info in z.infolist())
    if inflated > _MAX_INFLATE * ctx.max_bytes:
        raise ReaderError(
            f"{what} would inflate to {inflated:,} bytes, over {_MAX_INFLATE} x the {ctx.max_bytes:,}-byte limit",
            "this is not a normal document (a zip bomb?); check where it came from",
        )


# ------------------------------------------------------------------------------------------- docx


def read_docx(ctx: ReadContext) -> Iterator[Document]:
    docx = require("docx", "office", "python-docx", "Word files")
    _open_zip(ctx, "Word file")
    document = docx.Document(str(ctx.path))
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    builder = TextBuilder()
    path: list[tuple[int, str]] = []
    title = str(document.core_properties.title or "")
    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            para = Paragraph(child, document)
            text = para.text.strip()
            if not text:
                continue
            level = _heading_level(para)
            if level:
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, text))
                title = title or text
            builder.add(text, {"section": [h for _, h in path]} if path else None, sep="\n")
        elif tag == "tbl":
            rows = _table_rows(Table(child, document))
            builder.add("\n".join(rows), {"section": [h for _, h in path]} if path else None, sep="\n")
    if not builder.text.strip():
        raise ReaderError("Word file has no text", "nothing to index", "skipped")
    yield ctx.document(builder.text, title=title, metadata={"format": "docx"}, spans=builder.spans)


def _heading_level(para: Any) -> int:
    name = str(para.style.name if para.style is not None else "")
    if name.lower() == "title":
        return 1
    m = _HEADING_RE.match(name)
    if m:
        return int(m.group(1))
    ppr = para._p.pPr  # an outline level set directly on the paragraph
    if ppr is not None and ppr.find("{http://schemas.openxmlformats.org/wordprocessingml/2006/main}outlineLvl") is not None:
        val = ppr.find("{http://schemas.openxmlformats.org/wordprocessingml/2006/main}outlineLvl").get(
            "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}val"
        )
        return int(val) + 1 if val is not None and val.isdigit() and int(val) < 9 else 0
    return 0


def _table_rows(table: Any) -> list[str]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = clean_cell(cell.text)
            if cells and cells[-1] == text:  # a merged cell repeats: keep it once
                continue
            cells.append(text)
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


# ------------------------------------------------------------------------------------------- pptx


def read_pptx(ctx: ReadContext) -> Iterator[Document]:
    pptx = require("pptx", "office", "python-pptx", "PowerPoint files")
    _open_zip(ctx, "PowerPoint file")
    prs = pptx.Presentation(str(ctx.path))
    builder = TextBuilder()
    deck_title = str(prs.core_properties.title or "")
    for number, slide in enumerate(prs.slides, start=1):
        title_shape = slide.shapes.title
        slide_title = clean_cell(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
        parts = [slide_title] if slide_title else []
        title_id = title_shape.shape_id if title_shape is not None else None
        for shape in slide.shapes:
            if shape.shape_id == title_id:
                continue
            parts.extend(_shape_text(shape))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                parts.append(f"Notes: {notes}")
        info: dict[str, Any] = {"slide": number}
        if slide_title:
            info["section"] = [slide_title]
        builder.add("\n".join(p for p in parts if p.strip()), info)
        deck_title = deck_title or slide_title
    if not builder.text.strip():
        raise ReaderError("PowerPoint file has no text", "nothing to index", "skipped")
    meta = {"format": "pptx", "slides": len(prs.slides)}
    yield ctx.document(builder.text, title=deck_title, metadata=meta, spans=builder.spans)


def _shape_text(shape: Any) -> list[str]:
    out: list[str] = []
    if getattr(shape, "shape_type", None) == 6 and hasattr(shape, "shapes"):  # a group: its members
        for sub in shape.shapes:
            out.extend(_shape_text(sub))
    if getattr(shape, "has_table", False) and shape.has_table:
        out.extend(_table_rows(shape.table))
    elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        text = "\n".join(p.text for p in shape.text_frame.paragraphs if p.text.strip())
        if text.strip():
            out.append(text.strip())
    return out


# ------------------------------------------------------------------------------------------- xlsx


def read_xlsx(ctx: ReadContext) -> Iterator[Document]:
    openpyxl = require("openpyxl", "office", "openpyxl", "Excel files")
    _open_zip(ctx, "Excel file")
    wb = openpyxl.load_workbook(str(ctx.path), read_only=True, data_only=True)
    builder = TextBuilder()
    try:
        for ws in wb.worksheets:
            header: list[str] = []
            for row_number, row in enumerate(ws.iter_rows(values_only=True), start=1):
                if row_number > _MAX_ROWS:
                    break
                cells = [clean_cell(v) if v is not None else "" for v in row]
                if not any(cells):
                    continue
                if not header:
                    header = cells
                    continue
                pairs = [
                    f"{header[i] if i < len(header) and header[i] else f'#{i + 1}'}: {v}"
                    for i, v in enumerate(cells) if v
                ]  # fmt: skip
                info = {"sheet": ws.title, "row_start": row_number, "row_end": row_number, "section": [ws.title]}
                builder.add(" | ".join(pairs), info, sep="\n")
            if header and not any(s[2].get("sheet") == ws.title for s in builder.spans):  # header-only sheet
                builder.add(" | ".join(header), {"sheet": ws.title, "row_start": 1, "row_end": 1}, sep="\n")
    finally:
        wb.close()
    if not builder.text.strip():
        raise ReaderError("Excel file has no cell values", "nothing to index", "skipped")
    meta = {"format": "xlsx", "sheets": len(wb.sheetnames)}
    yield ctx.document(builder.text, title="", metadata=meta, spans=builder.spans)
