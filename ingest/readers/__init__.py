"""Read documents from files, folders and records.

``iter_documents(paths)`` yields one :class:`~cjkrag.types.Document` per readable file or JSON Lines
record, and a :class:`ReadFailure` for everything it cannot use (``kind="failed"``: missing path, binary
or undecodable file, encrypted PDF, corrupt Office file, bad jsonl line...; ``kind="skipped"``: empty file,
unknown extension inside a folder). A failure never stops the other files.

One module per family: ``text`` (.txt/.md/.html, encodings in ``encoding``), ``jsonl``, ``pdf``,
``office`` (.docx/.pptx/.xlsx), ``mail`` (.eml/.msg), ``ocr`` (images). The heavy libraries of each are
optional extras imported only when such a file is read; when one is missing the file fails naming the
extra to install.

Where a document came from (PDF page, slide, sheet rows, section headings) travels as a span map in
``metadata["_spans"]`` (see ``base.SPANS_KEY``); ``cjkrag.ingest.citations`` resolves it per chunk.

Document ids (the key that re-ingestion replaces): a file's id is its resolved absolute POSIX path, or,
with ``source_id="kb"``, ``kb:<path relative to the folder given>`` (the file's name when a file is
given) — portable across machines. A jsonl record's id is its own ``id``.
"""

from __future__ import annotations

import codecs
import importlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cjkrag.errors import InputError
from cjkrag.ingest.readers.base import SPANS_KEY, ReadContext, ReaderError, ReadFailure
from cjkrag.ingest.readers.encoding import CJK_ENCODINGS, decode_bytes
from cjkrag.ingest.readers.jsonl import Defaults, make_defaults, read_jsonl, record_to_document
from cjkrag.types import Document

__all__ = [
    "CJK_ENCODINGS",
    "DEFAULT_MAX_BYTES",
    "EXTRAS",
    "SPANS_KEY",
    "SUPPORTED_EXTENSIONS",
    "ReadFailure",
    "decode_bytes",
    "iter_documents",
    "iter_records",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: extension -> "module:function" of the reader (imported on first use)
_READERS: dict[str, str] = {
    **dict.fromkeys((".txt", ".md", ".markdown", ".html", ".htm"), "text:read_text_file"),
    ".pdf": "pdf:read_pdf",
    ".docx": "office:read_docx",
    ".pptx": "office:read_pptx",
    ".xlsx": "office:read_xlsx",
    ".eml": "mail:read_eml",
    ".msg": "mail:read_msg",
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"), "ocr:read_image"),
}
SUPPORTED_EXTENSIONS = (*_READERS, ".jsonl")
#: extension -> the optional extra whose packages read it (None: always available)
EXTRAS: dict[str, str | None] = {
    ext: {"pdf": "pdf", "office": "office", "mail": "email", "ocr": "ocr"}.get(spec.split(":")[0])
    for ext, spec in _READERS.items()
}
_SOURCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def iter_documents(
    paths: Sequence[str | Path] | str | Path,
    *,
    default_acl: Iterable[str] = (),
    default_public: bool = False,
    default_deny: Iterable[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    source_id: str | None = None,
    encoding: str | None = None,
    ocr: bool = True,
) -> Iterator[Document | ReadFailure]:
    """Documents from files and folders (recursive, sorted by relative path: deterministic).

    Ids: a file's resolved absolute POSIX path; with ``source_id`` (letters, digits, ``_.-``), the
    portable ``<source_id>:<path relative to the folder given>`` (``<source_id>:<name>`` for a file
    given directly). A jsonl record's id is its ``id``. ``default_*`` apply to files, and to records
    that do not set the field. Hidden files and folders (name starting with ``.``) inside folders are
    ignored. ``max_bytes`` caps the size of any file except ``.jsonl`` (streamed line by line).
    ``encoding`` forces the encoding of text files (.txt/.md/.html) instead of detecting it. ``ocr=False``
    never runs OCR (images are skipped, text-less PDF pages reported).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if source_id is not None and not _SOURCE_ID_RE.match(source_id):
        raise InputError(
            f"source id {source_id!r} is not valid: use 1-64 letters, digits, '_', '.' or '-' (e.g. 'kb')"
        )
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise InputError(
                f"--encoding {encoding!r} is not a known encoding: use e.g. gb18030, big5, cp932, euc_jp, cp949"
            ) from None
    defaults = make_defaults(default_acl, default_deny, default_public)
    seen: dict[str, str] = {}
    for given in paths:
        root = Path(given)
        if not root.exists():
            yield ReadFailure(
                str(given), "path does not exist", "check the path (relative to the working directory)"
            )
        elif root.is_dir():
            for rel, path in _walk(root):
                if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                    yield ReadFailure(
                        str(path), f"unsupported extension {path.suffix or '(none)'!r}",
                        f"supported: {', '.join(SUPPORTED_EXTENSIONS)}", kind="skipped",
                    )  # fmt: skip
                    continue
                ctx = _context(path, _doc_id(path, rel, source_id), defaults, max_bytes, encoding, ocr)
                yield from _dedup(_read_file(ctx, defaults), seen)
        elif root.suffix.lower() not in SUPPORTED_EXTENSIONS:
            yield ReadFailure(
                str(root), f"unsupported extension {root.suffix or '(none)'!r}",
                f"convert it to one of {', '.join(SUPPORTED_EXTENSIONS)}",
            )  # fmt: skip
        else:
            ctx = _context(root, _doc_id(root, root.name, source_id), defaults, max_bytes, encoding, ocr)
            yield from _dedup(_read_file(ctx, defaults), seen)


def iter_records(
    records: Iterable[Mapping[str, Any]],
    *,
    default_acl: Iterable[str] = (),
    default_public: bool = False,
    default_deny: Iterable[str] = (),
    source: str = "<record>",
) -> Iterator[Document | ReadFailure]:
    """Documents from Python mappings, validated exactly like ``.jsonl`` lines (failures name ``source[i]``)."""
    defaults = make_defaults(default_acl, default_deny, default_public)
    seen: dict[str, str] = {}
    for i, rec in enumerate(records):
        where = f"{source}[{i}]"
        try:
            doc = record_to_document(rec, defaults, source=where)
        except ReaderError as exc:
            yield ReadFailure(where, exc.error, exc.fix, kind=exc.kind)
            continue
        yield from _dedup(iter([doc]), seen)


def _doc_id(path: Path, rel: str, source_id: str | None) -> str:
    return f"{source_id}:{rel}" if source_id else path.resolve().as_posix()


def _context(
    path: Path, doc_id: str, defaults: Defaults, max_bytes: int, encoding: str | None, ocr: bool
) -> ReadContext:
    acl, deny, public = defaults
    return ReadContext(
        path=path, doc_id=doc_id, acl=acl, deny=deny, public=public, max_bytes=max_bytes,
        encoding=encoding, ocr=ocr,
    )  # fmt: skip


def _walk(root: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return found


def _dedup(items: Iterator[Document | ReadFailure], seen: dict[str, str]) -> Iterator[Document | ReadFailure]:
    for item in items:
        if isinstance(item, Document):
            first = seen.get(item.id)
            if first is not None:
                yield ReadFailure(
                    item.source, f"duplicate document id {item.id!r} (already read from {first})",
                    "give every document a unique id (ingest the folders with different --source-id, or rename)",
                )  # fmt: skip
                continue
            seen[item.id] = item.source
        yield item


def _reader(ext: str) -> Callable[[ReadContext], Iterable[Document | ReadFailure]]:
    module, func = _READERS[ext].split(":")
    reader: Callable[[ReadContext], Iterable[Document | ReadFailure]] = getattr(
        importlib.import_module(f"cjkrag.ingest.readers.{module}"), func
    )
    return reader


def _read_file(ctx: ReadContext, defaults: Defaults) -> Iterator[Document | ReadFailure]:
    ext = ctx.path.suffix.lower()
    if ext == ".jsonl":
        yield from read_jsonl(ctx.path, defaults)
        return
    try:
        yield from _reader(ext)(ctx)
    except ReaderError as exc:
        yield ReadFailure(ctx.source, exc.error, exc.fix, kind=exc.kind)
    except Exception as exc:  # a library choking on a malformed file: report it by name, go on
        yield ReadFailure(
            ctx.source, f"cannot read this {ext} file: {type(exc).__name__}: {exc}",
            "check that the file opens in its application and is not damaged; re-save or export it",
        )  # fmt: skip
