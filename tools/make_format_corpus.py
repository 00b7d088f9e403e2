"""Write the same CJK passages as PDF (text, vertical 縦書き and image-only), DOCX, PPTX, XLSX, EML, MSG and PNG.

    python tools/make_format_corpus.py OUT_DIR

Used by tests/test_formats.py (into a tmp folder) and benchmarks/formats.py; nothing binary is kept in
the repository. Needs the office/pdf extras' writers (python-docx, python-pptx, openpyxl), fontTools (the
vertical PDF's embedded font, tools/cid_pdf.py), reportlab (its
built-in CID fonts STSong-Light / HeiseiMin-W3 / HYSMyeongJo-Medium need no font file) and, for the
rendered images, a CJK font: the ``noto-cjk-sans-otc`` package or Debian's fonts-noto-cjk.
"""

from __future__ import annotations

import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

#: (language, section heading, passage): one per PDF page / slide / sheet row / docx section
PASSAGES = [
    ("zh", "第1章 账户", "1.1 密码重置",
     "如果您忘记了密码，请在登录页面点击忘记密码。系统会向您的注册邮箱发送一封验证邮件，请在三十分钟内完成重置。"),
    ("ja", "第2章 返品", "2.1 送料",
     "商品到着後七日以内であれば返品を受け付けます。返品の送料はお客様のご負担となりますので、あらかじめご了承ください。"),
    ("ko", "제3장 배송", "3.1 배송 기간",
     "주문하신 상품은 결제 완료 후 영업일 기준 삼 일 이내에 발송됩니다. 도서 산간 지역은 배송이 하루 이틀 더 걸릴 수 있습니다."),
]  # fmt: skip
OCR_TEXT = "发票申请请在订单完成后三十天内提交，逾期系统将不再受理。电子发票会发送到您的邮箱。"
HEADER = "内部资料 Internal"
_CID_FONTS = {"zh": "STSong-Light", "ja": "HeiseiMin-W3", "ko": "HYSMyeongJo-Medium"}


def font_path() -> str | None:
    """A CJK font file for Pillow, or None."""
    try:
        import noto_cjk_sans_otc

        return str(noto_cjk_sans_otc.FONT_PATH)
    except ImportError:
        pass
    for cand in ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc"):
        if Path(cand).exists():
            return cand
    return None


def _wrap(text: str, width: int) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)]


def write_pdf(path: Path) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    for name in _CID_FONTS.values():
        pdfmetrics.registerFont(UnicodeCIDFont(name))
    c = canvas.Canvas(str(path), pagesize=A4)
    c.setTitle("客服手册")
    for page, (lang, chapter, _section, text) in enumerate(PASSAGES, start=1):
        font = _CID_FONTS[lang]
        c.setFont("STSong-Light", 9)
        c.drawString(72, 810, HEADER)  # running header and page-number footer: dropped by the reader
        c.drawString(280, 30, f"- {page} -")
        c.setFont(font, 16)
        c.drawString(72, 760, chapter)
        c.setFont(font, 12)
        y = 730
        for line in _wrap(text, 24):  # a sentence broken across lines: joined without spaces
            c.drawString(72, y, line)
            y -= 17
        c.setFont("Helvetica", 12)
        c.drawString(72, y - 20, "Please contact the support team if")
        c.drawString(72, y - 36, "the problem persists.")
        c.showPage()
    c.save()


def render_text_image(text: str, width: int = 1200, size: int = 32, font_index: int = 2) -> Any:
    """``text`` drawn black on white; ``font_index`` in Noto Sans CJK: 0 ja, 1 ko, 2 zh-Hans, 3 zh-Hant."""
    from PIL import Image, ImageDraw, ImageFont

    fp = font_path()
    if fp is None:
        raise RuntimeError("no CJK font: pip install noto-cjk-sans-otc (or apt-get install fonts-noto-cjk)")
    font = ImageFont.truetype(fp, size, index=font_index)
    per_line = (width - 80) // size
    lines = _wrap(text, per_line)
    img = Image.new("RGB", (width, 80 + len(lines) * int(size * 1.6)), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((40, 40 + i * int(size * 1.6)), line, font=font, fill="black")
    return img


def write_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.core_properties.title = "客服手册"
    for _lang, chapter, section, text in PASSAGES:
        d.add_heading(chapter, level=1)
        d.add_heading(section, level=2)
        d.add_paragraph(text)
    table = d.add_table(rows=3, cols=3)
    for r, row in enumerate([("项目", "期限", "费用"), ("退货", "七天", "买家承担"), ("换货", "十五天", "免费")]):
        for col, value in enumerate(row):
            table.cell(r, col).text = value
    d.save(str(path))


def write_pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    for _lang, chapter, _section, text in PASSAGES:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = chapter
        slide.placeholders[1].text_frame.text = text
        slide.notes_slide.notes_text_frame.text = f"讲者备注：{chapter}"
    slide = prs.slides.add_slide(prs.slide_layouts[5])
    slide.shapes.title.text = "费用一览"
    shape = slide.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1))
    for r, row in enumerate([("项目", "费用"), ("退货运费", "买家承担")]):
        for col, value in enumerate(row):
            shape.table.cell(r, col).text = value
    prs.save(str(path))


def write_xlsx(path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "FAQ"
    ws.append(["语言", "章节", "内容"])
    for lang, chapter, _section, text in PASSAGES:
        ws.append([lang, chapter, text])
    ws2 = wb.create_sheet("费用")
    ws2.append(["项目", "费用"])
    ws2.append(["退货运费", "买家承担"])
    wb.save(str(path))


def write_eml(path: Path) -> None:
    msg = EmailMessage()
    msg["Subject"] = "关于退货运费的通知"
    msg["From"] = "客服部 <support@example.com>"
    msg["To"] = "all@example.com"
    msg["Date"] = "Tue, 01 Dec 2026 09:30:00 +0800"
    msg.set_content(PASSAGES[0][3])
    msg.add_alternative(f"<html><body><p>{PASSAGES[0][3]}</p><script>x()</script></body></html>", subtype="html")
    msg.add_attachment(PASSAGES[1][3].encode("shift_jis"), maintype="text", subtype="plain", filename="返品規定.txt")
    msg.add_attachment(b"\x89PNG\r\n\x1a\n", maintype="image", subtype="png", filename="logo.png")
    path.write_bytes(bytes(msg))


def write_vertical_pdf(path: Path) -> None:
    """The passages set vertically (縦書き), one page each, in an embedded CID font (tools/cid_pdf.py)."""
    from cid_pdf import Run, vertical_columns, write_cid_pdf

    pages = []
    for page, (_lang, chapter, _section, text) in enumerate(PASSAGES, start=1):
        pages.append([
            Run(72, 812, 9, HEADER.split()[0]), Run(290, 24, 9, f"- {page} -"),  # running header/footer
            Run(545, 790, 16, chapter, vertical=True),
            *vertical_columns(text, 24, right=515, top=790, size=12, pitch=20),
        ])  # fmt: skip
    write_cid_pdf(path, pages)


def write_msg_file(path: Path) -> None:
    """The e-mail of write_eml as an Outlook .msg (tools/make_msg.py)."""
    from datetime import datetime, timedelta, timezone

    from make_msg import write_msg

    write_msg(
        path, subject="关于退货运费的通知", sender=("客服部", "support@example.com"), to=[("全体员工", "all@example.com")],
        date=datetime(2026, 12, 1, 9, 30, tzinfo=timezone(timedelta(hours=8))), body=PASSAGES[0][3],
        attachments=[("返品規定.txt", PASSAGES[1][3].encode("shift_jis"), "text/plain"),
                     ("logo.png", b"\x89PNG\r\n\x1a\n", "image/png")],
    )  # fmt: skip


def make_corpus(out: Path, *, images: bool = True) -> dict[str, Path]:
    """Write every format into ``out``; returns {format: path}. ``images`` needs a CJK font."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "pdf": out / "manual.pdf", "docx": out / "manual.docx", "pptx": out / "slides.pptx",
        "xlsx": out / "faq.xlsx", "eml": out / "notice.eml", "msg": out / "notice-outlook.msg",
        "pdf_vertical": out / "tategaki.pdf",
    }  # fmt: skip
    write_pdf(files["pdf"])
    write_vertical_pdf(files["pdf_vertical"])
    write_msg_file(files["msg"])
    write_docx(files["docx"])
    write_pptx(files["pptx"])
    write_xlsx(files["xlsx"])
    write_eml(files["eml"])
    if images and font_path() is not None:
        img = render_text_image(OCR_TEXT)
        files["png"] = out / "invoice.png"
        img.save(files["png"])
        files["scan_pdf"] = out / "scanned.pdf"
        img.save(files["scan_pdf"], "PDF", resolution=150)
    return files


if __name__ == "__main__":
    for fmt, p in make_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "format-corpus")).items():
        print(f"{fmt:9s} {p}")
