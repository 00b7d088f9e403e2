"""Every document reader on a corpus generated into tmp (tools/make_format_corpus.py): extracted text vs
the source passages (character error rate printed and bounded), page/slide/sheet/section citations, bad
files reported by name, and a real Engine (Milvus Lite, fake embedder) finding the right page."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from cjkrag.ingest.citations import cite
from cjkrag.ingest.readers import ReadFailure, iter_documents
from cjkrag.types import Document

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_format_corpus as corpus  # noqa: E402

for mod in ("pypdfium2", "docx", "pptx", "openpyxl", "reportlab"):
    if importlib.util.find_spec(mod) is None:
        pytest.skip(f"{mod} not installed: pip install -e '.[pdf,office,email,dev]'", allow_module_level=True)

PASSAGES = [p[3] for p in corpus.PASSAGES]
CER_BOUND = {"pdf": 0.0, "pdf_vertical": 0.0, "docx": 0.0, "pptx": 0.0, "xlsx": 0.0, "eml": 0.0, "png": 0.05, "scan_pdf": 0.05}


def cer(expected: str, text: str) -> float:
    """Character error rate of ``expected`` against its best-matching stretch of ``text`` (whitespace
    ignored): edit distance with free start and end in ``text``, divided by len(expected)."""
    a = "".join(expected.split())
    b = "".join(text.split())
    prev = [0] * (len(b) + 1)  # free start anywhere in b
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return min(prev) / max(len(a), 1)  # free end


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpus.make_corpus(tmp_path_factory.mktemp("formats"))


def read(path: Path, **kw: Any) -> list[Document | ReadFailure]:
    return list(iter_documents([path], default_acl=["group:staff"], **kw))


def one_doc(path: Path, **kw: Any) -> Document:
    items = read(path, **kw)
    docs = [d for d in items if isinstance(d, Document)]
    assert docs, items
    return docs[0]


def span_of(doc: Document, needle: str) -> dict[str, Any]:
    at = doc.text.index(needle)
    return cite(doc.metadata["_spans"], at, at + len(needle))


@pytest.mark.parametrize("fmt", ["pdf", "pdf_vertical", "docx", "pptx", "xlsx"])
def test_text_formats_keep_every_passage(files: dict[str, Path], fmt: str) -> None:
    doc = one_doc(files[fmt])
    rates = [cer(p, doc.text) for p in PASSAGES]
    print(f"CER {fmt}: " + " ".join(f"{lang}={r:.3f}" for (lang, *_), r in zip(corpus.PASSAGES, rates, strict=True)))
    assert max(rates) <= CER_BOUND[fmt], rates
    assert doc.acl == ("group:staff",) and doc.metadata["format"] == fmt.split("_")[0]


def test_vertical_pdf_pages_sections_and_reading_order(files: dict[str, Path]) -> None:
    doc = one_doc(files["pdf_vertical"])
    assert doc.metadata["vertical_pages"] == [1, 2, 3]
    for page, (_lang, chapter, _section, passage) in enumerate(corpus.PASSAGES, start=1):
        assert passage in doc.text  # down each column, columns right to left, no space added between CJK
        assert span_of(doc, passage) == {"page": page, "section": [chapter]}  # the 16 pt vertical heading
    assert "内部资料" not in doc.text and "- 2 -" not in doc.text


def test_pdf_pages_headers_and_line_joining(files: dict[str, Path]) -> None:
    doc = one_doc(files["pdf"])
    assert doc.title == "客服手册" and doc.metadata["pages"] == 3
    for page, (_lang, chapter, _section, passage) in enumerate(corpus.PASSAGES, start=1):
        assert passage in doc.text  # lines broken inside the sentence are joined with no space
        assert span_of(doc, passage) == {"page": page, "section": [chapter]}  # 16 pt title over 12 pt text
    assert corpus.HEADER not in doc.text and "- 2 -" not in doc.text  # running header/footer dropped
    assert "support team if the problem persists" in doc.text  # Latin lines joined with a space


def test_pdf_two_columns_are_read_in_order(tmp_path: Path) -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    path = tmp_path / "cols.pdf"
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    c.setFont("STSong-Light", 12)
    c.drawString(72, 800, "两栏排版的标题横跨整个页面宽度，位于最上方")
    left = ["左栏第一行内容", "左栏第二行内容", "左栏第三行内容", "左栏第四行结束"]
    right = ["右栏第一行内容", "右栏第二行内容", "右栏第三行内容", "右栏第四行结束"]
    for i, (lt, rt) in enumerate(zip(left, right, strict=True)):  # drawn row by row, interleaved
        c.drawString(72, 760 - 16 * i, lt)
        c.drawString(320, 760 - 16 * i, rt)
    c.save()
    text = one_doc(path).text
    assert text.index("左栏第四行结束") < text.index("右栏第一行内容"), text
    assert "左栏第一行内容左栏第二行内容" in text  # one column's lines form one paragraph
    assert text.index("标题") < text.index("左栏")


def test_docx_sections_and_tables(files: dict[str, Path]) -> None:
    doc = one_doc(files["docx"])
    assert doc.title == "客服手册"
    for (_lang, chapter, section, passage) in corpus.PASSAGES:
        assert span_of(doc, passage)["section"] == [chapter, section]
    assert "退货 | 七天 | 买家承担" in doc.text  # a table row keeps its cell boundaries


def test_pptx_slides_titles_and_notes(files: dict[str, Path]) -> None:
    doc = one_doc(files["pptx"])
    assert doc.metadata["slides"] == 4
    for slide, (_lang, chapter, _section, passage) in enumerate(corpus.PASSAGES, start=1):
        assert span_of(doc, passage) == {"slide": slide, "section": [chapter]}
        assert doc.text.count(chapter) == 2  # the title once, and in the speaker notes
        assert f"Notes: 讲者备注：{chapter}" in doc.text
    assert "退货运费 | 买家承担" in doc.text and span_of(doc, "退货运费")["slide"] == 4


def test_xlsx_rows_repeat_the_header(files: dict[str, Path]) -> None:
    doc = one_doc(files["xlsx"])
    for row, (lang, chapter, _section, passage) in enumerate(corpus.PASSAGES, start=2):
        assert f"语言: {lang} | 章节: {chapter} | 内容: {passage}" in doc.text
        assert span_of(doc, passage) == {"sheet": "FAQ", "row_start": row, "row_end": row, "section": ["FAQ"]}
    assert span_of(doc, "买家承担") == {"sheet": "费用", "row_start": 2, "row_end": 2, "section": ["费用"]}
    both = cite(doc.metadata["_spans"], 0, doc.text.index(PASSAGES[2]) + 3)
    assert both["row_start"] == 2 and both["row_end"] == 4  # a chunk over several rows cites the range


def test_eml_subject_metadata_and_attachment_children(files: dict[str, Path]) -> None:
    items = read(files["eml"], source_id="mail")
    docs = [d for d in items if isinstance(d, Document)]
    assert [d.id for d in docs] == ["mail:notice.eml", "mail:notice.eml#返品規定.txt"]
    msg, att = docs
    assert msg.title == "关于退货运费的通知" and msg.metadata["from"] == "客服部 <support@example.com>"
    assert msg.metadata["date"] == "2026-12-01T09:30:00+08:00"
    assert PASSAGES[0] in msg.text and "x()" not in msg.text
    assert msg.metadata["attachments_not_indexed"] == ["logo.png"]
    assert att.text == PASSAGES[1] and att.metadata["encoding"] == "cp932"  # Shift_JIS attachment detected
    assert att.acl == msg.acl == ("group:staff",) and att.deny == msg.deny and att.public is msg.public
    assert att.metadata["parent_id"] == msg.id


def test_eml_html_only_body_becomes_text(tmp_path: Path) -> None:
    from email.message import EmailMessage

    m = EmailMessage()
    m["Subject"] = "HTML のみ"
    m.set_content(f"<html><body><h1>案内</h1><p>{PASSAGES[1]}</p><style>p{{}}</style></body></html>", subtype="html")
    path = tmp_path / "h.eml"
    path.write_bytes(bytes(m))
    doc = one_doc(path)
    assert PASSAGES[1] in doc.text and "<p>" not in doc.text and doc.title == "HTML のみ"


def test_markdown_headings_are_sections(tmp_path: Path) -> None:
    path = tmp_path / "m.md"
    path.write_text(f"# 第1章 账户\n\n## 1.1 密码重置\n\n{PASSAGES[0]}\n\n# 第2章 返品\n\n{PASSAGES[1]}\n", encoding="utf-8")
    doc = one_doc(path)
    assert span_of(doc, PASSAGES[0])["section"] == ["第1章 账户", "1.1 密码重置"]
    assert span_of(doc, PASSAGES[1])["section"] == ["第2章 返品"]


# ------------------------------------------------------------------------------------- bad files


def test_unreadable_files_are_reported_by_name_and_the_rest_go_on(tmp_path: Path, files: dict[str, Path]) -> None:
    from reportlab.pdfgen import canvas

    enc = tmp_path / "secret.pdf"
    c = canvas.Canvas(str(enc), encrypt="s3cret")
    c.drawString(72, 720, "top secret")
    c.save()
    (tmp_path / "truncated.pdf").write_bytes(files["pdf"].read_bytes()[:300])
    (tmp_path / "corrupt.docx").write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    with zipfile.ZipFile(tmp_path / "notword.docx", "w") as z:
        z.writestr("hello.txt", "not a word file")
    (tmp_path / "broken.xlsx").write_bytes(b"garbage")
    (tmp_path / "broken.msg").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (tmp_path / "good.pptx").write_bytes(files["pptx"].read_bytes())
    items = list(iter_documents([tmp_path], default_public=True, ocr=False))
    fails = {Path(f.source).name: f for f in items if isinstance(f, ReadFailure)}
    assert [Path(d.source).name for d in items if isinstance(d, Document)] == ["good.pptx"]
    assert set(fails) == {"secret.pdf", "truncated.pdf", "corrupt.docx", "notword.docx", "broken.xlsx", "broken.msg", "broken.png"}
    assert "encrypted" in fails["secret.pdf"].error and "password" in fails["secret.pdf"].error
    assert fails["broken.png"].kind == "skipped"  # OCR off for this run
    for f in fails.values():
        assert f.error and f.fix, f


def test_missing_extra_names_it(tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # import raises ImportError, as when not installed
    (fail,) = read(files["pdf"])
    assert isinstance(fail, ReadFailure) and "pypdfium2" in fail.error and "cjkrag[pdf]" in fail.fix


def test_scanned_pdf_page_is_reported_when_ocr_is_off(files: dict[str, Path]) -> None:
    if "scan_pdf" not in files:
        pytest.skip("no CJK font to render the scan: pip install noto-cjk-sans-otc")
    items = read(files["scan_pdf"], ocr=False)
    assert [f.source for f in items if isinstance(f, ReadFailure)] == [f"{files['scan_pdf']} p.1", str(files["scan_pdf"])]
    assert not [d for d in items if isinstance(d, Document)]


# ---------------------------------------------------------------------------------------------- OCR


def _ocr_or_skip(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from cjkrag.ingest.readers import ocr

    if corpus.font_path() is None:
        pytest.skip("no CJK font to render images: pip install noto-cjk-sans-otc")
    monkeypatch.setenv("CJKRAG_OCR_ENGINE", engine)
    if ocr.engine_name() != engine:
        why = "pip install 'cjkrag[ocr]'" if engine == "rapidocr" else (
            "apt-get install tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-jpn tesseract-ocr-kor (make system-deps)")
        pytest.skip(f"OCR engine {engine} not installed: {why}")


@pytest.mark.parametrize("engine", ["rapidocr", "tesseract"])
def test_ocr_reads_a_rendered_chinese_png(files: dict[str, Path], engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _ocr_or_skip(engine, monkeypatch)
    doc = one_doc(files["png"])
    rate = cer(corpus.OCR_TEXT, doc.text)
    print(f"CER png ({engine}): zh={rate:.3f}")
    assert rate <= CER_BOUND["png"], doc.text
    assert doc.metadata["ocr"] == engine and span_of(doc, doc.text[:5])["page"] == 1


@pytest.mark.slow
def test_ocr_fills_a_scanned_pdf_page(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _ocr_or_skip("tesseract" if shutil.which("tesseract") else "rapidocr", monkeypatch)
    doc = one_doc(files["scan_pdf"])
    rate = cer(corpus.OCR_TEXT, doc.text)
    print(f"CER scan_pdf (OCR): zh={rate:.3f}")
    assert rate <= CER_BOUND["scan_pdf"] and doc.metadata["ocr_pages"] == [1]


@pytest.mark.parametrize(("lang", "index", "passage"), [("ja", 0, 1), ("ko", 1, 2)])
def test_tesseract_reads_japanese_and_korean(tmp_path: Path, lang: str, index: int, passage: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _ocr_or_skip("tesseract", monkeypatch)
    text = PASSAGES[passage]
    path = tmp_path / f"{lang}.png"
    corpus.render_text_image(text, size=32, font_index=index).save(path)
    rate = cer(text, one_doc(path).text)
    print(f"CER png (tesseract): {lang}={rate:.3f}")
    assert rate <= 0.05


# ------------------------------------------------------------------------------------- end to end


def test_engine_finds_the_right_page_slide_and_row(files: dict[str, Path], tmp_path: Path) -> None:
    from tests.conftest import make_engine

    folder = tmp_path / "kb"
    folder.mkdir()
    for fmt in ("pdf", "pdf_vertical", "docx", "pptx", "xlsx", "eml", "msg"):
        (folder / files[fmt].name).write_bytes(files[fmt].read_bytes())
    engine = make_engine(tmp_path / "data", chunking={"max_tokens": 48, "overlap_tokens": 0})
    try:
        rep = engine.ingest([folder], acl=["group:staff"])
        assert not rep.failed, rep.failed
        assert rep.documents == 9  # 7 files + each e-mail's text attachment
        hits = engine.search("返品の送料はお客様のご負担", principals=["group:staff"], mode="keyword", top_k=20)
        by_source = {(h.metadata["format"], Path(h.doc_id.split("#")[0]).suffix): h for h in reversed(hits)}
        by_format = {fmt: h for (fmt, suffix), h in by_source.items() if suffix != ".msg"}  # best hit per format
        assert by_format["pdf"].metadata["page"] == 2 and by_format["pdf"].metadata["section"] == ["第2章 返品"]
        vertical = next(h for h in hits if h.doc_id.endswith("tategaki.pdf"))
        assert vertical.metadata["page"] == 2 and vertical.metadata["section"] == ["第2章 返品"]
        assert by_source[("attachment", ".msg")].metadata["section"] == ["关于退货运费的通知", "返品規定.txt"]
        assert by_format["pptx"].metadata["slide"] == 2 and by_format["pptx"].metadata["section"] == ["第2章 返品"]
        assert by_format["docx"].metadata["section"] == ["第2章 返品", "2.1 送料"]
        assert by_format["xlsx"].metadata["sheet"] == "FAQ" and by_format["xlsx"].metadata["row_start"] <= 3
        assert by_format["attachment"].doc_id.endswith("notice.eml#返品規定.txt")
        assert all("_spans" not in h.metadata for h in hits)
        assert engine.search("返品", principals=["group:other"], mode="keyword") == []  # children keep the ACL
    finally:
        engine.close()


def test_cite_is_pure_and_picks_the_section_in_force() -> None:
    spans = [
        [0, 10, {"page": 1, "section": ["A", "A.1"]}],
        [12, 30, {"page": 2, "section": ["B"]}],
        [32, 40, {"page": 3}],
    ]
    assert cite(spans, 2, 8) == {"page": 1, "section": ["A", "A.1"]}
    assert cite(spans, 14, 35) == {"page": 2, "page_end": 3, "section": ["B"]}
    assert cite(spans, 5, 20) == {"page": 1, "page_end": 2, "section": ["A", "A.1"]}
    assert cite(spans, 10, 12) == {"page": 1, "section": ["A", "A.1"]}  # only the separator: the span before
    assert cite([], 0, 5) == {}


def test_size_limits_and_zip_bombs_are_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    bomb = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", b"\x00" * 2_000_000)  # ~2 KB on disk, 2 MB inflated
    (fail,) = read(bomb, max_bytes=100_000)
    assert isinstance(fail, ReadFailure) and "inflate" in fail.error
    for fmt in ("pdf", "docx", "eml"):
        (big,) = [i for i in read(files[fmt], max_bytes=100) if isinstance(i, ReadFailure)]
        assert "limit" in big.error and "max_file_bytes" in big.fix
