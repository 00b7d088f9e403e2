"""Write small PDFs with an embedded CID-keyed TrueType font (Type0, Identity-H / Identity-V), for tests.

Real CJK PDFs embed a subset font and address glyphs by CID through ``Identity-H`` (horizontal) or
``Identity-V`` (vertical, 縦書き) and map CIDs back to Unicode with a ``ToUnicode`` CMap — or forget that map,
which is what makes their text unextractable. This writer produces both, with no system font: the font
is built here with fontTools (one square glyph per character; the glyph shapes do not matter for text
extraction, their boxes do: pdfium drops a vertical text run whose glyphs have no outline, as happens
with a non-embedded CID font on a machine without that font, measured with reportlab's HeiseiMin-W3 in
UniJIS-UCS2-V).

    write_cid_pdf(path, [[Run(x, y, size, "縦書きの本文", vertical=True), ...], ...page 2...])

``x, y`` is where the run starts (PDF points, origin bottom-left; for a vertical run, the top centre of
its first glyph). ``to_unicode=False`` leaves the ToUnicode map out and gives the font no Unicode cmap,
so a reader cannot recover the characters from the file.
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


def _font_bytes(n_glyphs: int, cmap: dict[int, str]) -> bytes:
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef"] + [f"g{i}" for i in range(1, n_glyphs + 1)]
    fb = FontBuilder(_EM, isTTF=True)
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({cp: name for cp, name in ((ord(ch), f"g{gid}") for gid, ch in cmap.items())})
    glyphs = {}
    for name in names:
        pen = TTGlyphPen(None)
        if name != ".notdef":
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


def _to_unicode(chars: Sequence[str]) -> bytes:
    entries = "\n".join(f"<{cid:04X}> <{ord(ch):04X}>" for cid, ch in enumerate(chars, start=1))
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        f"{len(chars)} beginbfchar\n{entries}\nendbfchar\n"
        "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")


def write_cid_pdf(
    path: Path, pages: Sequence[Sequence[Run]], *, to_unicode: bool = True, size: tuple[float, float] = (595, 842),
) -> None:  # fmt: skip
    """One page per element of ``pages``; every run in the one embedded font (F1 horizontal, F2 vertical)."""
    chars = sorted({ch for page in pages for run in page for ch in run.text if not ch.isspace()})
    cid = {ch: i for i, ch in enumerate(chars, start=1)}  # CID = glyph id (CIDToGIDMap /Identity)
    font = _font_bytes(len(chars), dict(enumerate(chars, start=1)) if to_unicode else {})

    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(data: bytes, extra: str = "") -> bytes:
        return f"<< /Length {len(data)} {extra}>>\nstream\n".encode() + data + b"\nendstream"

    font_file = add(stream(font, f"/Length1 {len(font)} "))
    descriptor = add(
        f"<< /Type /FontDescriptor /FontName /AAAAAA+CjkragTest /Flags 4 /FontBBox [0 -120 1000 880] "
        f"/ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 800 /StemV 80 /FontFile2 {font_file} 0 R >>".encode()
    )  # fmt: skip
    cid_font = add(
        f"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /AAAAAA+CjkragTest "
        f"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor {descriptor} 0 R "
        f"/DW {_EM} /DW2 [{_DW2[0]} {_DW2[1]}] /CIDToGIDMap /Identity >>".encode()
    )  # fmt: skip
    tu = f"/ToUnicode {add(stream(_to_unicode(chars)))} 0 R " if to_unicode else ""
    fonts = [
        add(f"<< /Type /Font /Subtype /Type0 /BaseFont /AAAAAA+CjkragTest /Encoding /Identity-{wmode} "
            f"/DescendantFonts [{cid_font} 0 R] {tu}>>".encode())
        for wmode in ("H", "V")
    ]  # fmt: skip
    pages_obj = len(objects) + 1 + 2 * len(pages) + 1  # written last, after every page and its content
    page_ids = []
    for page in pages:
        ops = []
        for run in page:
            hexes = "".join(f"{cid[ch]:04X}" if not ch.isspace() else "" for ch in run.text)
            ops.append(f"BT /F{2 if run.vertical else 1} {run.size:g} Tf 1 0 0 1 {run.x:g} {run.y:g} Tm <{hexes}> Tj ET")
        content = add(stream("\n".join(ops).encode()))
        page_ids.append(add(
            f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 {size[0]:g} {size[1]:g}] "
            f"/Resources << /Font << /F1 {fonts[0]} 0 R /F2 {fonts[1]} 0 R >> >> /Contents {content} 0 R >>".encode()
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
