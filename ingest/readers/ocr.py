"""OCR for images (.png/.jpg/.tiff/...) and text-less PDF pages, with RapidOCR (extra ``ocr``:
``rapidocr-onnxruntime``, whose wheel ships the PP-OCRv4 Chinese/English models, so it runs offline).

Measured on rendered CJK text (README "Formats"): Chinese and Latin are read well; the PP-OCRv4 Chinese
model knows kana poorly and Hangul not at all, so Japanese/Korean scans are read with errors or not at
all — such a page gives little text rather than a wrong success, and the README says so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from cjkrag.ingest.readers.base import (
    MissingExtra,
    ReadContext,
    ReaderError,
    TextBuilder,
    join_lines,
    require,
)
from cjkrag.types import Document

_LOCK = threading.Lock()
_MIN_SCORE = 0.5


def available() -> bool:
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _engine() -> Any:
    mod = require("rapidocr_onnxruntime", "ocr", "rapidocr-onnxruntime", "images (OCR)")
    return mod.RapidOCR()


def recognize(image: Any) -> str:
    """Text of a PIL image, line by line in reading order (top to bottom, left to right)."""
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
        raise MissingExtra("ocr", "rapidocr-onnxruntime", "images (OCR)")
    from PIL import Image, ImageSequence, UnidentifiedImageError

    size = ctx.path.stat().st_size
    if size > ctx.max_bytes:
        raise ReaderError(f"file is {size:,} bytes, over the {ctx.max_bytes:,}-byte limit", "split or shrink it")
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
        builder.text, title="", metadata={"format": ctx.path.suffix.lower().lstrip("."), "ocr": True},
        spans=builder.spans,
    )  # fmt: skip
