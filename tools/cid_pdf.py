"""Write small PDFs with an embedded CID-keyed TrueType font (Type0, Identity-H / Identity-V), for tests.

Real CJK PDFs embed a subset font and address glyphs by CID through ``Identity-H`` (horizontal) or
``Identity-V`` (vertical, 縦書き) and map CIDs back to Unicode with a ``ToUnicode`` CMap — or forget that map,
which is what makes their text unextractable. This writer produces both, with no system font: the font
is built here with fontTools (one square glyph per character unless ``outlines`` names a font to copy the
glyphs from; the glyph shapes do not matter for text
extraction, their boxes do: pdfium drops a vertical text run whose glyphs have no outline, as happens
with a non-embedded CID font on a machine without that font, measured with reportlab's HeiseiMin-W3 in
UniJIS-UCS2-V).

    write_cid_pdf(path, [[Run(x, y, size, "縦書きの本文", vertical=True), ...], ...page 2...])

``x, y`` is where the run starts (PDF points, origin bottom-left; for a vertical run, the top centre of
its first glyph). ``Run(..., mapped=False)`` sets a run in a copy of the font with no ToUnicode map and
no Unicode cmap, so a reader cannot recover its characters from the file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_EM = 1000
_DW2 = (880, -1000)  # vertical metrics: origin 880 units above the baseline, advance one em downwards


@dataclass(frozen=True)
class Run:
    x: float
    y: float
    size: float
    text: str
    vertical: bool = False
    mapped: bool = True  # False: in a font without a ToUnicode map


def _font_bytes(chars: Sequence[str], cmap: dict[int, str], outlines: tuple[str, int] | None) -> bytes:
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    source = None
    if outlines is not None:  # real glyph shapes (so the page can be rendered and OCR'd), converted to TrueType
        from fontTools.ttLib import TTFont

        src = TTFont(outlines[0], fontNumber=outlines[1], lazy=True)
        source = (src.getGlyphSet(), src.getBestCmap())
    names = [".notdef"] + [f"g{i}" for i in range(1, len(chars) + 1)]
    fb = FontBuilder(_EM, isTTF=True)
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({cp: name for cp, name in ((ord(ch), f"g{gid}") for gid, ch in cmap.items())})
    glyphs = {}
    for gid, name in enumerate(names):
        pen = TTGlyphPen(None)
        if gid and chars[gid - 1].isspace():
            pass  # a space: advances, draws nothing
        elif source is not None and gid and ord(chars[gid - 1]) in source[1]:
            source[0][source[1][ord(chars[gid - 1])]].draw(Cu2QuPen(pen, 1.0, reverse_direction=True))
        elif name != ".notdef":
            pen.moveTo((100, -80))
            pen.lineTo((100, 800))
            pen.lineTo((900, 800))
            pen.lineTo((900, -80))
            pen.closePath()
        glyphs[name] = pen.glyph()
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({name: (_EM, 100) for name in names})
    fb.setupHorizontalHeader(ascent=880, descent=-120)
    fb.setupNameTable({"familyName": "CjkragTest", "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=880, sTypoDescender=-120, usWinAscent=880, usWinDescent=120)
    fb.setupPost()
    buf = io.BytesIO()
    fb.save(buf)
    return buf.getvalue()


def _to_unicode(pairs: Sequence[tuple[int, str]]) -> bytes:
    entries = "\n".join(f"<{cid:04X}> <{ord(ch):04X}>" for cid, ch in pairs)
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        f"{len(pairs)} beginbfchar\n{entries}\nendbfchar\n"
        "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")


def write_cid_pdf(
    path: Path, pages: Sequence[Sequence[Run]], *, size: tuple[float, float] = (595, 842),
    cid_start: int = 1, cid_step: int = 1, outlines: tuple[str, int] | None = None,
) -> None:  # fmt: skip
    """One page per element of ``pages``. Runs are set in an embedded font with a ToUnicode map (/F1
    horizontal, /F2 vertical), or, ``Run(mapped=False)``, in a copy without one and without a Unicode
    cmap (/F3, /F4): the text of those runs cannot be extracted from the file.

    Characters get CIDs ``cid_start, cid_start + cid_step, ...`` (glyph ids 1, 2, ... through a CIDToGIDMap
    when not 1, 1): without a ToUnicode map a reader that takes CIDs for code points gets control
    characters from the default, or letters scattered over many alphabets from e.g. (0x400, 97).
    ``outlines=(font file, index)`` copies the real glyphs from that font (e.g. Noto Sans CJK) instead of
    squares, so the page renders legibly (for OCR)."""
    chars = sorted({ch for page in pages for run in page for ch in run.text if ch not in "\r\n"})
    cid = {ch: cid_start + i * cid_step for i, ch in enumerate(chars)}

    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(data: bytes, extra: str = "") -> bytes:
        return f"<< /Length {len(data)} {extra}>>\nstream\n".encode() + data + b"\nendstream"

    cid_to_gid = "/Identity"
    if (cid_start, cid_step) != (1, 1):
        table = bytearray(2 * (max(cid.values()) + 1))
        for gid, ch in enumerate(chars, start=1):
            table[2 * cid[ch] : 2 * cid[ch] + 2] = gid.to_bytes(2, "big")
        cid_to_gid = f"{add(stream(bytes(table)))} 0 R"
    fonts: list[int] = []  # F1, F2 (mapped H, V), F3, F4 (unmapped H, V)
    for mapped in (True, False):
        font = _font_bytes(chars, dict(enumerate(chars, start=1)) if mapped else {}, outlines)
        name = "AAAAAA+CjkragTest" if mapped else "BBBBBB+CjkragTestNoUnicode"
        font_file = add(stream(font, f"/Length1 {len(font)} "))
        descriptor = add(
            f"<< /Type /FontDescriptor /FontName /{name} /Flags 4 /FontBBox [0 -120 1000 880] "
            f"/ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 800 /StemV 80 /FontFile2 {font_file} 0 R >>".encode()
        )  # fmt: skip
        cid_font = add(
            f"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /{name} "
            f"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor {descriptor} 0 R "
            f"/DW {_EM} /DW2 [{_DW2[0]} {_DW2[1]}] /CIDToGIDMap {cid_to_gid} >>".encode()
        )  # fmt: skip
        tu = f"/ToUnicode {add(stream(_to_unicode([(cid[ch], ch) for ch in chars])))} 0 R " if mapped else ""
        fonts += [
            add(f"<< /Type /Font /Subtype /Type0 /BaseFont /{name} /Encoding /Identity-{wmode} "
                f"/DescendantFonts [{cid_font} 0 R] {tu}>>".encode())
            for wmode in ("H", "V")
        ]  # fmt: skip
    resources = " ".join(f"/F{i} {obj} 0 R" for i, obj in enumerate(fonts, start=1))
    pages_obj = len(objects) + 1 + 2 * len(pages) + 1  # written last, after every page and its content
    page_ids = []
    for page in pages:
        ops = []
        for run in page:
            hexes = "".join(f"{cid[ch]:04X}" for ch in run.text if ch in cid)
            font_no = (1 if run.mapped else 3) + run.vertical
            ops.append(f"BT /F{font_no} {run.size:g} Tf 1 0 0 1 {run.x:g} {run.y:g} Tm <{hexes}> Tj ET")
        content = add(stream("\n".join(ops).encode()))
        page_ids.append(add(
            f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 {size[0]:g} {size[1]:g}] "
            f"/Resources << /Font << {resources} >> >> /Contents {content} 0 R >>".encode()
        ))  # fmt: skip
    add(b"<< /Producer (cjkrag tools/cid_pdf.py) >>")
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    assert add(f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode()) == pages_obj
    catalog = add(f"<< /Type /Catalog /Pages {pages_obj} 0 R >>".encode())

    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def vertical_columns(text: str, per_column: int, *, right: float, top: float, size: float, pitch: float) -> list[Run]:
    """``text`` set vertically in columns of ``per_column`` characters, the first at x=``right``, each next
    one ``pitch`` points to its left (Japanese vertical reading order)."""
    cols = [text[i : i + per_column] for i in range(0, len(text), per_column)]
    return [Run(right - k * pitch, top, size, col, vertical=True) for k, col in enumerate(cols)]
