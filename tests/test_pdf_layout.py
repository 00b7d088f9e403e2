"""PDF reading order and unusable text layers, on PDFs written at test time by tools/cid_pdf.py (Type0 fonts
with Identity-H / Identity-V encodings, embedded, with or without a ToUnicode map): vertical Japanese
(縦書き) pages, three columns and pages that change their number of columns, tables, and pages whose font
has no Unicode map (reported, or OCR'd when an engine is installed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from cjkrag.ingest.citations import cite
from cjkrag.ingest.readers import ReadFailure, iter_documents
from cjkrag.types import Document

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

for mod in ("pypdfium2", "fontTools"):
    if importlib.util.find_spec(mod) is None:
        pytest.skip(f"{mod} not installed: pip install -e '.[pdf,dev]'", allow_module_level=True)

import make_format_corpus as corpus  # noqa: E402
from cid_pdf import Run, vertical_columns, write_cid_pdf  # noqa: E402

JA = corpus.PASSAGES[1][3]  # 57 characters of Japanese
JA2 = "日本語の文書では縦書きが今も広く使われています。新聞や小説、契約書の一部もそうです。"
ZH = corpus.PASSAGES[0][3]


def read(path: Path, **kw: Any) -> list[Document | ReadFailure]:
    return list(iter_documents([path], default_acl=["group:staff"], **kw))


def one_doc(path: Path, **kw: Any) -> Document:
    items = read(path, **kw)
    docs = [d for d in items if isinstance(d, Document)]
    assert len(docs) == 1, items
    return docs[0]


def where(doc: Document, needle: str) -> dict[str, Any]:
    at = doc.text.index(needle)
    return cite(doc.metadata["_spans"], at, at + len(needle))


def pdfium_text(path: Path, page: int = 0) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        tp = pdf[page].get_textpage()
        return "".join(tp.get_text_range(0, tp.count_chars()).split())
    finally:
        pdf.close()


# ------------------------------------------------------------------------------------ vertical (縦書き)


def _running(page: int) -> list[Run]:
    return [Run(60, 815, 9, "社内資料・返品の手引き"), Run(290, 20, 9, f"- {page} -")]  # horizontal header/footer


def test_vertical_japanese_reads_down_each_column_and_columns_right_to_left(tmp_path: Path) -> None:
    path = tmp_path / "tategaki.pdf"
    pages = [
        [*_running(1), Run(540, 800, 18, "第二章返品", vertical=True),
         *vertical_columns(JA, 20, right=505, top=800, size=14, pitch=22)],
        [*_running(2), *vertical_columns(JA2, 18, right=540, top=800, size=14, pitch=22)],
        [*_running(3), Run(60, 700, 12, ZH[:30]), Run(60, 684, 12, ZH[30:])],  # a horizontal page
    ]  # fmt: skip
    write_cid_pdf(path, pages)
    assert JA not in pdfium_text(path)  # pdfium's own order runs the columns left to right: the reader must fix it
    doc = one_doc(path)
    assert JA in doc.text and JA2 in doc.text and ZH in doc.text  # each column top to bottom, right to left
    assert where(doc, JA) == {"page": 1, "section": ["第二章返品"]}  # the larger vertical heading
    assert where(doc, JA2)["page"] == 2 and where(doc, ZH)["page"] == 3
    assert doc.metadata["vertical_pages"] == [1, 2]  # found from the glyphs' positions, page by page
    assert "社内資料" not in doc.text and "- 2 -" not in doc.text  # horizontal running header/footer dropped


def test_vertical_tiers_are_read_top_tier_first(tmp_path: Path) -> None:
    """A vertical page set in two tiers (段組): the upper tier's columns right to left, then the lower's."""
    path = tmp_path / "dan.pdf"
    upper = vertical_columns(JA, 15, right=540, top=800, size=14, pitch=22)
    lower = vertical_columns(JA2, 15, right=540, top=560, size=14, pitch=22)
    interleaved = [run for pair in zip(lower, upper, strict=False) for run in pair] + upper[len(lower) :]
    write_cid_pdf(path, [interleaved])  # drawn in no useful order
    doc = one_doc(path)
    assert JA in doc.text and JA2 in doc.text
    assert doc.text.index(JA) < doc.text.index(JA2)


def test_horizontal_title_and_caption_on_a_vertical_page_keep_their_place(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pdf"
    page = [
        Run(150, 790, 20, "返品についてのご案内"),  # a horizontal title over the vertical columns
        *vertical_columns(JA, 20, right=520, top=750, size=14, pitch=22),
        Run(300, 400, 10, "図1返品の流れを示す図です"),  # a horizontal caption between the two tiers
        *vertical_columns(JA2, 20, right=520, top=370, size=14, pitch=22),
    ]
    write_cid_pdf(path, [page])
    doc = one_doc(path)
    order = ["返品についてのご案内", JA, "図1返品の流れを示す図です", JA2]
    positions = [doc.text.index(p) for p in order]
    assert positions == sorted(positions), doc.text
    assert where(doc, JA)["section"] == ["返品についてのご案内"] and doc.metadata["vertical_pages"] == [1]


def test_vertical_box_on_a_horizontal_page_is_read_whole_after_the_text_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "box.pdf"
    body = (ZH * 3)[:150]
    runs = [Run(60, 760 - 16 * i, 12, body[i * 25 : (i + 1) * 25]) for i in range(6)]
    runs += vertical_columns("縦書きの囲み記事です。", 6, right=520, top=760, size=12, pitch=18)
    write_cid_pdf(path, [runs])
    doc = one_doc(path)
    assert body in doc.text and "縦書きの囲み記事です。" in doc.text, doc.text  # columns right to left, not mixed in
    assert doc.text.index(body) < doc.text.index("縦書き") and "vertical_pages" not in doc.metadata


def test_vertical_text_in_a_missing_non_embedded_font_is_reported(tmp_path: Path) -> None:
    """reportlab's HeiseiMin-W3 in UniJIS-UCS2-V is a CID font that is not embedded: without that font on the
    machine its glyphs have no outline, a vertical run gets a zero-width box, and pdfium leaves it off the
    text layer (measured: the columns without punctuation vanish). The page is reported, not silently cut."""
    pytest.importorskip("reportlab", reason="reportlab not installed: pip install -e '.[dev]'")
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    font = UnicodeCIDFont("HeiseiMin-W3", isVertical=True)
    font.name = font.fontName = "HeiseiMin-W3-V"
    pdfmetrics.registerFont(font)
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    path = tmp_path / "notembedded.pdf"
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    c.setFont("HeiseiMin-W3-V", 14)
    for k, col in enumerate(["商品到着後七日以内であれば返品を", "受け付けます。返品の送料はお客様"]):
        c.drawString(500 - 22 * k, 780, col)
    c.showPage()
    c.setFont("STSong-Light", 12)
    c.drawString(72, 700, ZH[:30])
    c.save()
    if "商品到着後" in pdfium_text(path):
        pytest.skip("a font that pdfium substitutes for HeiseiMin-W3 is installed here: the text is placed")
    items = read(path, ocr=False)
    (fail,) = [f for f in items if isinstance(f, ReadFailure)]
    (doc,) = [d for d in items if isinstance(d, Document)]
    assert fail.source == f"{path} p.1" and "neither embedded" in fail.error and "embedded" in fail.fix
    assert ZH[:30] in doc.text and where(doc, ZH[:30])["page"] == 2


# ------------------------------------------------------------------------------------------ columns

COLS3 = [
    "第一栏介绍退货的条件：商品在签收后七天内可以申请退货，需要保持包装完整。",
    "第二栏说明运费的规则：质量问题由商家承担运费，其他原因由买家承担运费。",
    "第三栏列出处理的时间：仓库收到商品后三个工作日内完成检查并安排退款。",
]
COLS2 = [
    "下方左栏说明换货流程：请先联系客服登记，再把商品寄回指定的仓库地址。",
    "下方右栏说明发票问题：电子发票会在订单完成后发送到您登记的邮箱里。",
]
WIDE = "本段文字横跨整个页面的宽度，位于三栏与两栏之间，应当在三栏之后、两栏之前读到。"


def _column_runs(texts: list[str], lefts: list[float], top: float, per_line: int, size: float = 12) -> list[Run]:
    """Columns of ``texts`` drawn row by row across the page (the stream order interleaves the columns)."""
    wrapped = [[t[i : i + per_line] for i in range(0, len(t), per_line)] for t in texts]
    runs = []
    for row in range(max(len(w) for w in wrapped)):
        for lines, x in zip(wrapped, lefts, strict=True):
            if row < len(lines):
                runs.append(Run(x, top - row * 16, size, lines[row]))
    return runs


def test_three_columns_and_a_page_that_changes_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "cols.pdf"
    page = [
        Run(60, 815, 9, "内部资料"), Run(480, 815, 9, "二〇二六年版"),  # a header with a left and a right part
        Run(60, 780, 16, "售后服务说明（三栏与两栏混排）"),
        *_column_runs(COLS3, [60, 235, 410], top=750, per_line=10),
        *[Run(60, 640 - 16 * i, 12, WIDE[i * 39 : (i + 1) * 39]) for i in range(2)],  # across the page
        *_column_runs(COLS2, [60, 320], top=590, per_line=17),
        Run(200, 20, 9, "客服中心电话四零零一二三"),  # a footer
    ]  # fmt: skip
    write_cid_pdf(path, [page])
    text = one_doc(path).text
    order = ["内部资料", "售后服务说明", *COLS3, WIDE, *COLS2, "客服中心"]
    for piece in order:
        assert piece in text, (piece, text)  # each column's lines joined into its sentence, no spaces
    positions = [text.index(p) for p in order]
    assert positions == sorted(positions), text


def test_a_table_is_read_row_by_row_not_as_columns(tmp_path: Path) -> None:
    path = tmp_path / "table.pdf"
    rows = [("项目", "期限", "费用"), ("退货", "七天", "买家承担"), ("换货", "十五天", "免费"), ("维修", "三十天", "视情况")]
    runs = [Run(x, 700 - 20 * r, 12, cell) for r, row in enumerate(rows) for x, cell in zip((80, 250, 420), row, strict=True)]
    write_cid_pdf(path, [[Run(80, 740, 12, "下表列出各项服务的期限和费用，供客服人员查阅使用。"), *runs]])
    text = "".join(one_doc(path).text.split())
    assert text.index("费用") < text.index("退货") < text.index("七天") < text.index("换货"), text


# ------------------------------------------------------------------------ fonts without a Unicode map


@pytest.mark.parametrize(("cid_start", "cid_step", "what"), [(1, 1, "control"), (0x400, 97, "scripts")])
def test_page_in_a_font_without_unicode_map_is_reported_not_indexed(
    tmp_path: Path, cid_start: int, cid_step: int, what: str,
) -> None:  # fmt: skip
    path = tmp_path / "nounicode.pdf"
    good = [Run(60, 700, 12, ZH[:30]), Run(60, 684, 12, ZH[30:])]
    bad = [Run(60, 700, 12, JA[:30], mapped=False), Run(60, 684, 12, JA[30:], mapped=False)]
    write_cid_pdf(path, [good, bad], cid_start=cid_start, cid_step=cid_step)
    raw = pdfium_text(path, 1)
    assert len(raw) >= 30 and not set(raw) & set(JA)  # pdfium does return characters for page 2, all wrong
    items = read(path, ocr=False)
    fails = [f for f in items if isinstance(f, ReadFailure)]
    (doc,) = [d for d in items if isinstance(d, Document)]
    assert [f.source for f in fails] == [f"{path} p.2"]
    assert "Unicode map" in fails[0].error and ("control" if what == "control" else "scripts") in fails[0].error
    assert "re-export" in fails[0].fix and "OCR" in fails[0].fix
    assert ZH in doc.text and where(doc, ZH)["page"] == 1
    assert set(doc.text) <= set(ZH) | set(" \n"), doc.text  # nothing of page 2 is indexed
    assert "ocr_pages" not in doc.metadata


def test_page_in_a_font_without_unicode_map_is_ocrd(tmp_path: Path) -> None:
    from cjkrag.ingest.readers import ocr

    font = corpus.font_path()
    if font is None:
        pytest.skip("no CJK font to draw real glyphs: pip install noto-cjk-sans-otc")
    if not ocr.available():
        pytest.skip("no OCR engine: pip install 'cjkrag[ocr]' or apt-get install tesseract-ocr tesseract-ocr-chi-sim")
    path = tmp_path / "nounicode-ocr.pdf"
    good = [Run(20, 40, 14, ZH[:30])]
    bad = [Run(20, 40, 16, ZH[30:], mapped=False)]  # Chinese: both engines read it
    write_cid_pdf(path, [good, bad], outlines=(font, 2), size=(480, 100))  # a small page: a quick render and OCR
    doc = one_doc(path)
    from tests.test_formats import cer

    page2 = doc.text[doc.text.index(ZH[:30]) + 30 :]
    rate = cer(ZH[30:], page2)
    print(f"CER pdf page without ToUnicode via OCR ({ocr.engine_name()}): zh={rate:.3f}")
    assert doc.metadata["ocr_pages"] == [2] and rate <= 0.05, doc.text


def _vertical_no_unicode_pdf(path: Path) -> None:
    font = corpus.font_path()
    if font is None:
        pytest.skip("no CJK font to draw real glyphs: pip install noto-cjk-sans-otc")
    runs = vertical_columns(JA, 15, right=280, top=330, size=18, pitch=28)
    write_cid_pdf(path, [[Run(r.x, r.y, r.size, r.text, vertical=True, mapped=False) for r in runs]],
                  outlines=(font, 0), size=(320, 360))  # fmt: skip


def test_vertical_page_without_unicode_map_is_ocrd_with_a_vertical_model(tmp_path: Path) -> None:
    from cjkrag.ingest.readers import ocr

    if not ocr.vertical_langs():
        pytest.skip("no vertical OCR model: apt-get install tesseract-ocr tesseract-ocr-jpn-vert")
    path = tmp_path / "tate-ocr.pdf"
    _vertical_no_unicode_pdf(path)
    doc = one_doc(path)
    from tests.test_formats import cer

    rate = cer(JA, doc.text)
    print(f"CER vertical pdf page without ToUnicode via OCR (tesseract {ocr.vertical_langs()}): ja={rate:.3f}")
    assert doc.metadata["ocr_pages"] == [1] and doc.metadata["vertical_pages"] == [1] and rate <= 0.05, doc.text


def test_vertical_page_is_not_ocrd_with_a_horizontal_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cjkrag.ingest.readers import ocr

    monkeypatch.setenv("CJKRAG_OCR_VERT_LANGS", "no_such_vert")  # as on a machine without jpn_vert
    if not ocr.available():
        pytest.skip("no OCR engine: pip install 'cjkrag[ocr]' or apt-get install tesseract-ocr tesseract-ocr-jpn")
    path = tmp_path / "tate-noocr.pdf"
    _vertical_no_unicode_pdf(path)
    items = read(path)
    assert not [d for d in items if isinstance(d, Document)]  # a horizontal reading would be garbage
    page = next(f for f in items if isinstance(f, ReadFailure) and f.source == f"{path} p.1")
    assert "vertical" in page.error and "jpn-vert" in page.fix and "re-export" in page.fix


# ---------------------------------------------------------------------------- the geometry alone (pure)


def test_four_columns_with_paragraph_breaks_at_the_same_height_stay_columns() -> None:
    """A blank line at the same height in every column (where a naive XY cut splits the page into bands
    and reads the columns' tops before their bottoms) does not break the columns."""
    from cjkrag.ingest.readers.pdf_layout import Line, paragraphs

    lines = []
    for col in range(4):
        x = 50 + col * 130
        for row in range(8):
            if row == 4:
                continue  # a paragraph break in every column at once
            lines.append(Line(f"第{col + 1}栏第{row + 1}行的文字内容", x, 700 - 16 * row, x + 110, 712 - 16 * row))
    paras = [p for p, _ in paragraphs(lines)]
    text = "".join(paras)
    expected = "".join(f"第{c}栏第{r}行的文字内容" for c in range(1, 5) for r in (1, 2, 3, 4, 6, 7, 8))
    assert text == expected, paras
    assert len(paras) == 8  # two paragraphs per column


def test_direction_comes_from_glyph_steps() -> None:
    from cjkrag.ingest.readers.pdf_layout import is_vertical_page, lines_from_chars

    down = [(ch, (100.0, 700.0 - 14 * i, 114.0, 714.0 - 14 * i)) for i, ch in enumerate("縦書きの文章です")]
    across = [(ch, (100.0 + 12 * i, 500.0, 112.0 + 12 * i, 512.0)) for i, ch in enumerate("横书")]
    lines = lines_from_chars([*down, ("\n", (0.0, 0.0, 0.0, 0.0)), *across])
    assert [(ln.text, ln.vertical) for ln in lines] == [("縦書きの文章です", True), ("横书", False)]
    assert is_vertical_page(lines)
    assert not is_vertical_page(lines_from_chars([(ch, (100.0 + 12 * i, 500.0, 112.0 + 12 * i, 512.0)) for i, ch in enumerate("横书的一行文字")]))


def test_contents_page_with_page_numbers_is_read_row_by_row() -> None:
    from cjkrag.ingest.readers.pdf_layout import Line, paragraphs

    entries = ["第一章 账户与密码的管理", "第二章 退货和换货的规定", "第三章 配送的时间与范围", "第四章 发票的申请方式"]
    lines = []
    for i, title in enumerate(entries):
        y = 700 - 20 * i
        lines += [Line(title, 60, y, 60 + 12 * len(title), y + 12, order=2 * i),  # drawn row by row
                  Line(str(3 + 7 * i), 520, y, 526, y + 12, order=2 * i + 1)]  # fmt: skip
    assert [p for p, _ in paragraphs(lines)] == [f"{t} {3 + 7 * i}" for i, t in enumerate(entries)]  # a row a line


def test_option_list_drawn_row_by_row_stays_rows_and_an_index_drawn_by_column_is_columns() -> None:
    """Two ambiguous two-column blocks (found on real PDFs: an option list and a two-column index) told
    apart by the stream order when the geometry does not say running text."""
    from cjkrag.ingest.readers.pdf_layout import Line, paragraphs

    options = [("-o, --output=FILE", "output file"), ("-n, --name=NAME", "array name"), ("-h, --help", "display this help and exit")]
    lines = []
    for i, (opt, desc) in enumerate(options):  # stream order: option, its description, next option...
        y = 700 - 14 * i
        lines += [Line(opt, 72, y, 72 + 6 * len(opt), y + 10, order=2 * i), Line(desc, 220, y, 220 + 6 * len(desc), y + 10, order=2 * i + 1)]
    text = "\n".join(p for p, _ in paragraphs(lines))
    assert text.index("output file") < text.index("-n, --name") < text.index("array name"), text

    left = ["A", "asn1Coding program . . . . 5", "asn1Decoding program . . . 7", "F", "FDL, GNU Free Documentation . 24"]
    right = ["M", "Main type asn1 node. . . . 4", "S", "Supported ASN.1 types . . . 2", "threads . . . . . . . . . . 1"]
    lines = []
    for k, col in enumerate((left, right)):  # stream order: the left column, then the right one
        x = 72 + 240 * k
        for i, t in enumerate(col):
            y = 700 - 14 * i
            lines.append(Line(t, x, y, x + (8 if len(t) == 1 else 200), y + 10, order=10 * k + i))
    text = "\n".join(p for p, _ in paragraphs(lines))
    assert text.index("FDL") < text.index("M") < text.index("threads"), text


@pytest.mark.parametrize("interleaved", [False, True], ids=["drawn-by-column", "drawn-by-row"])
def test_two_columns_with_a_narrow_gutter(tmp_path: Path, interleaved: bool) -> None:
    """A 1 em gutter (LaTeX two-column papers: 10 pt between columns of 10 pt text)."""
    path = tmp_path / "narrow.pdf"
    left, right = (ZH + JA)[:96], (JA2 + ZH)[:96]
    cols = [[Run(x, 760 - 14 * i, 10, t[i * 24 : (i + 1) * 24]) for i in range(4)] for x, t in ((50, left), (300, right))]
    runs = [r for pair in zip(*cols, strict=True) for r in pair] if interleaved else cols[0] + cols[1]
    write_cid_pdf(path, [runs])
    text = one_doc(path).text
    assert left in text and right in text and text.index(left) < text.index(right), text
