"""Reader throughput per format and OCR accuracy/speed on rendered CJK text, on this CPU.

    python benchmarks/formats.py [--repeat 5] [--no-ocr]

Writes the generated corpus (tools/make_format_corpus.py; vertical and three-column PDFs from tools/cid_pdf.py,
a .msg from tools/make_msg.py) to a temporary folder, reads each file
``--repeat`` times and prints pages (PDF pages, slides, sheet rows, messages) per second. OCR: renders a
zh / ja / ko passage with Noto Sans CJK (noto-cjk-sans-otc) and prints the character error rate and the
characters per second of RapidOCR and, when the `tesseract` binary with chi_sim/jpn/kor data is
installed, of Tesseract.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import make_format_corpus as corpus  # noqa: E402

from cjkrag.ingest.readers import iter_documents  # noqa: E402
from cjkrag.types import Document  # noqa: E402

OCR_SAMPLES = [  # (language, Noto Sans CJK collection index, tesseract language, text)
    ("zh", 2, "chi_sim", corpus.OCR_TEXT),
    ("ja", 0, "jpn", corpus.PASSAGES[1][3]),
    ("ko", 1, "kor", corpus.PASSAGES[2][3]),
]


def cer(expected: str, text: str) -> float:
    from test_formats import cer as _cer

    return _cer(expected, text)


def units(doc: Document) -> int:
    meta = doc.metadata
    return int(meta.get("pages") or meta.get("slides") or len(meta.get("_spans") or []) or 1)


def bench_readers(out: Path, repeat: int, ocr: bool) -> None:
    files = {**corpus.make_corpus(out, images=ocr), **layout_files(out)}
    print(f"{'format':10s} {'units':>6s} {'units/s':>9s} {'chars/s':>10s}  (unit: page, slide, sheet row, message)")
    for fmt, path in files.items():
        if not ocr and fmt in ("png", "scan_pdf"):
            continue
        n = 1 if fmt in ("png", "scan_pdf") else repeat
        t0 = time.perf_counter()
        for _ in range(n):
            docs = [d for d in iter_documents([path], default_public=True) if isinstance(d, Document)]
        dt = (time.perf_counter() - t0) / n
        u = sum(units(d) for d in docs)
        chars = sum(len(d.text) for d in docs)
        print(f"{fmt:10s} {u:6d} {u / dt:9.1f} {chars / dt:10.0f}")


def layout_files(out: Path) -> dict[str, Path]:
    """10-page PDFs for the layout paths (tools/cid_pdf.py): vertical Japanese, three columns; and a .msg."""
    from datetime import UTC, datetime

    from cid_pdf import Run, vertical_columns, write_cid_pdf
    from make_msg import write_msg

    ja, zh = corpus.PASSAGES[1][3], corpus.PASSAGES[0][3]
    files = {"pdf-vert": out / "vertical.pdf", "pdf-3col": out / "cols3.pdf", "msg": out / "notice.msg"}
    vertical = [vertical_columns(ja * 4, 30, right=540, top=800, size=12, pitch=19) for _ in range(10)]
    write_cid_pdf(files["pdf-vert"], vertical)
    cols = [[Run(60 + 175 * c, 780 - 16 * r, 12, zh[(r * 3 + c) % 40 : (r * 3 + c) % 40 + 10]) for r in range(40) for c in range(3)]]
    write_cid_pdf(files["pdf-3col"], cols * 10)
    write_msg(files["msg"], subject="关于退货运费的通知", sender=("客服部", "s@example.com"), to=[("全体", "a@example.com")],
              date=datetime(2026, 12, 1, tzinfo=UTC), body=zh * 20, attachments=[("a.txt", ja.encode(), "text/plain")])  # fmt: skip
    return files


def _render(text: str, index: int) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(corpus.font_path(), 32, index=index)
    lines = [text[i : i + 30] for i in range(0, len(text), 30)]
    img = Image.new("RGB", (1100, 80 + 52 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 52 * i), line, font=font, fill="black")
    return img


def bench_ocr() -> None:
    from cjkrag.ingest.readers import ocr

    if corpus.font_path() is None:
        print("OCR: skipped (no CJK font: pip install noto-cjk-sans-otc)")
        return
    print(f"\n{'engine':10s} {'lang':4s} {'CER':>6s} {'chars/s':>8s}  (the reader's own settings)")
    for name in ("rapidocr", "tesseract"):
        os.environ["CJKRAG_OCR_ENGINE"] = name
        if ocr.engine_name() != name:
            print(f"{name:10s} not installed")
            continue
        ocr.recognize(_render("预热", 2))  # load the models outside the timing
        for lang, index, _tlang, text in OCR_SAMPLES:
            img = _render(text, index)
            t0 = time.perf_counter()
            got = ocr.recognize(img)
            dt = time.perf_counter() - t0
            print(f"{name:10s} {lang:4s} {cer(text, got):6.3f} {len(text) / dt:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-ocr", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_readers(Path(tmp), args.repeat, not args.no_ocr)
    if not args.no_ocr:
        bench_ocr()


if __name__ == "__main__":
    main()
