"""OCR for images (.png/.jpg/.tiff/...) and text-less PDF pages.

Two engines, chosen by measurement (README "Formats", benchmarks/formats.py):
- Tesseract (Debian ``tesseract-ocr`` + ``-chi-sim``/``-chi-tra``/``-jpn``/``-kor`` language data), run as
  a subprocess with every installed CJK language at once and page mode 4 (one column: mode 3 split
  spaced Korean lines into fake columns): CER about 0.02 on rendered zh, ja and ko.
- RapidOCR (extra ``ocr``: ``rapidocr-onnxruntime``, whose wheel ships the PP-OCRv4 zh/en models, so
  it is PyPI-only and offline): CER 0 on Chinese, but its Chinese model reads kana poorly (CER 0.53)
  and Hangul not at all (0.98).
``CJKRAG_OCR_ENGINE=auto`` (default) uses Tesseract when it is installed with CJK data, else RapidOCR;
``tesseract`` or ``rapidocr`` forces one. Vertical text (``recognize(image, vertical=True)``, for PDF pages
the PDF reader found vertical) needs Tesseract's ``jpn_vert`` model (page mode 5); without it
``recognize`` raises rather than read vertical columns as horizontal lines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from cjkrag.ingest.readers.base import (
    MissingExtra,
    ReadContext,
    ReaderError,
    TextBuilder,
    check_size,
    join_lines,
    require,
)
from cjkrag.types import Document

_LOCK = threading.Lock()
_MIN_SCORE = 0.5


# chi_tra is left out by default: with it, Tesseract turned a simplified Chinese page into traditional
# characters (CER 0.34); set CJKRAG_OCR_LANGS=chi_tra+jpn+kor for traditional Chinese scans.
_CJK_TESS = ("chi_sim", "jpn", "kor")
_SPACE_IN_CJK_RE = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef])[ \t]+(?=[\u3000-\u9fff\uff00-\uffef])")


def available() -> bool:
    return engine_name() is not None


def engine_name() -> str | None:
    """The OCR engine this run uses, or None when none is installed."""
    wanted = os.environ.get("CJKRAG_OCR_ENGINE", "auto").strip().lower()
    if wanted in ("auto", "tesseract") and _tesseract_langs():
        return "tesseract"
    if wanted in ("auto", "rapidocr"):
        try:
            import rapidocr_onnxruntime  # noqa: F401
        except ImportError:
            return None
        return "rapidocr"
    return None


def _tesseract_langs(wanted: str | None = None) -> str:
    """The installed ones among ``wanted`` (default ``CJKRAG_OCR_LANGS`` or chi_sim+jpn+kor), "+"-joined."""
    want = wanted if wanted is not None else os.environ.get("CJKRAG_OCR_LANGS", "+".join(_CJK_TESS))
    have = _installed_langs()
    return "+".join(lang for lang in want.split("+") if lang in have)


@lru_cache(maxsize=1)
def _installed_langs() -> frozenset[str]:
    exe = shutil.which("tesseract")
    if exe is None:
        return frozenset()
    try:
        res = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(res.stdout.split()) | frozenset(res.stderr.split())


@lru_cache(maxsize=1)
def _engine() -> Any:
    mod = require("rapidocr_onnxruntime", "ocr", "rapidocr-onnxruntime", "images (OCR)")
    return mod.RapidOCR()


def vertical_langs() -> str:
    """Tesseract's vertical-text models installed (``jpn_vert`` by default; ``CJKRAG_OCR_VERT_LANGS``
    sets them, e.g. ``jpn_vert+chi_tra_vert``), "" when vertical pages cannot be OCR'd here."""
    if engine_name() != "tesseract":
        return ""  # RapidOCR's line assembly is horizontal only
    return _tesseract_langs(os.environ.get("CJKRAG_OCR_VERT_LANGS", "jpn_vert"))


def recognize(image: Any, *, vertical: bool = False) -> str:
    """Text of a PIL image, line by line in reading order (top to bottom, left to right; with
    ``vertical``, columns top to bottom, right to left: Tesseract with a ``*_vert`` model only)."""
    engine = engine_name()
    if vertical:
        langs = vertical_langs()
        if not langs:
            raise ReaderError(
                "OCR of vertical text needs Tesseract with its vertical Japanese model (jpn_vert)",
                "apt-get install tesseract-ocr tesseract-ocr-jpn-vert",
            )
        return _tesseract(image, langs, psm=5)
    if engine == "tesseract":
        return _tesseract(image, _tesseract_langs())
    if engine is None:
        raise MissingExtra("ocr", "rapidocr-onnxruntime", "scanned pages and images (OCR)")
    return _rapidocr(image)


def _tesseract(image: Any, langs: str, psm: int = 4) -> str:
    with tempfile.TemporaryDirectory(prefix="cjkrag-ocr-") as tmp:
        path = Path(tmp) / "page.png"
        image.convert("RGB").save(path)
        res = subprocess.run(
            ["tesseract", str(path), "-", "-l", langs, "--psm", str(psm)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    if res.returncode != 0:
        raise ReaderError(f"tesseract failed: {res.stderr.strip()[:300]}", "check the tesseract installation")
    lines = [_SPACE_IN_CJK_RE.sub("", line.strip()) for line in res.stdout.splitlines()]
    return "\n".join(line for line in lines if line)


def _rapidocr(image: Any) -> str:
    import numpy as np

    arr = np.asarray(image.convert("RGB"))[:, :, ::-1]  # RGB -> BGR, as OpenCV-based RapidOCR expects
    with _LOCK:  # one inference at a time: the ONNX session is shared
        result, _ = _engine()(arr)
    if not result:
        return ""
    boxes = []
    for box, text, score in result:
        if float(score) < _MIN_SCORE or not str(text).strip():
            continue
        ys = [p[1] for p in box]
        xs = [p[0] for p in box]
        boxes.append((min(ys), max(ys), min(xs), str(text).strip()))
    boxes.sort()
    lines: list[list[tuple[float, float, float, str]]] = []
    for b in boxes:  # same line: vertical overlap with the line's first box
        if lines and b[0] < (lines[-1][0][0] + lines[-1][0][1]) / 2:
            lines[-1].append(b)
        else:
            lines.append([b])
    out = []
    for line in lines:
        out.append(join_lines(t for *_, t in sorted(line, key=lambda b: b[2])))
    return "\n".join(out)


def read_image(ctx: ReadContext) -> Iterator[Document]:
    if not ctx.ocr:
        raise ReaderError("image skipped: OCR is off for this run", "enable OCR to index images", "skipped")
    if not available():
        raise MissingExtra("ocr", "rapidocr-onnxruntime", "images (OCR; or install Debian's tesseract-ocr)")
    from PIL import Image, ImageSequence, UnidentifiedImageError

    check_size(ctx)
    try:
        img = Image.open(ctx.path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ReaderError(f"not a readable image ({exc})", "re-save it as PNG or JPEG") from None
    builder = TextBuilder()
    with img:
        for number, frame in enumerate(ImageSequence.Iterator(img), start=1):  # multi-page TIFF
            builder.add(recognize(frame), {"page": number})
    if not builder.text.strip():
        raise ReaderError("OCR found no text in the image", "nothing to index", "skipped")
    yield ctx.document(
        builder.text, title="", metadata={"format": ctx.path.suffix.lower().lstrip("."), "ocr": engine_name()},
        spans=builder.spans,
    )  # fmt: skip
