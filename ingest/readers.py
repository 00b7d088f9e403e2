"""Read documents from files, folders and records, detecting legacy CJK encodings.

``iter_documents(paths)`` yields one :class:`~cjkrag.types.Document` per readable file (``.txt``, ``.md``,
``.html``/``.htm``) or JSON Lines record (``.jsonl``), and a :class:`ReadFailure` for everything it cannot
use (``kind="failed"``: missing path, binary or undecodable file, bad jsonl line...; ``kind="skipped"``:
empty file, unknown extension inside a folder). A failure never stops the other files.

Text is kept exactly as decoded (offsets of chunks point into it); only a byte-order mark is removed.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cjkrag.errors import InputError
from cjkrag.types import Document

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_EXTENSIONS",
    "ReadFailure",
    "decode_bytes",
    "iter_documents",
    "iter_records",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
SUPPORTED_EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm", ".jsonl")
#: Legacy encodings tried when a file is not UTF-8 (supersets: cp932 ⊃ Shift_JIS, cp949 ⊃ EUC-KR).
CJK_ENCODINGS = ("gb18030", "big5", "big5hkscs", "cp932", "shift_jis", "euc_jp", "cp949", "euc_kr")
# charset-normalizer "chaos" (0 = clean text) above which a detection is not trusted.
_MAX_CHAOS = 0.25
_SUSPICIOUS_RE = re.compile("[\ufffd\ue000-\uf8ff]")

_RECORD_FIELDS = ("id", "text", "title", "acl", "deny", "public", "metadata", "language", "tenant")
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
_BINARY_SIGNATURES = {
    b"%PDF": ("PDF", "extract its text first, e.g. `pdftotext FILE.pdf FILE.txt`"),
    b"PK\x03\x04": ("ZIP container: docx/xlsx/zip", "export it as .txt/.md/.html first"),
    b"\xd0\xcf\x11\xe0": ("old Office document", "save it as .txt/.html first"),
    b"\x89PNG": ("PNG image", "images are not supported; index a text description instead"),
    b"\xff\xd8\xff": ("JPEG image", "images are not supported; index a text description instead"),
}
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class ReadFailure:
    """A file, line or record that gave no document, with why and how to fix it."""

    source: str  # path, ``path:line`` for a jsonl line, ``<record>[i]`` for a Python record
    error: str
    fix: str
    kind: Literal["failed", "skipped"] = "failed"

    def __str__(self) -> str:
        return f"{self.kind}: {self.source}: {self.error} ({self.fix})"


class _RecordError(Exception):
    def __init__(self, error: str, fix: str, kind: Literal["failed", "skipped"] = "failed") -> None:
        super().__init__(error)
        self.error, self.fix, self.kind = error, fix, kind


# ---------------------------------------------------------------------------------------- public


def iter_documents(
    paths: Sequence[str | Path] | str | Path,
    *,
    default_acl: Iterable[str] = (),
    default_public: bool = False,
    default_deny: Iterable[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Document | ReadFailure]:
    """Documents from files and folders (recursive, sorted by relative path: deterministic).

    A file's id is its path relative to the folder given (posix), or its name when the file itself is
    given; a jsonl record's id is its ``id``. ``default_*`` apply to files, and to records that do not
    set the field. Hidden files and folders (name starting with ``.``) inside folders are ignored.
    ``max_bytes`` caps the size of a text/markdown/html file; ``.jsonl`` files are streamed line by line.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    defaults = _defaults(default_acl, default_deny, default_public)
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
                yield from _dedup(_read_file(path, rel, defaults, max_bytes), seen)
        elif root.suffix.lower() not in SUPPORTED_EXTENSIONS:
            yield ReadFailure(
                str(root), f"unsupported extension {root.suffix or '(none)'!r}",
                f"convert it to one of {', '.join(SUPPORTED_EXTENSIONS)}",
            )  # fmt: skip
        else:
            yield from _dedup(_read_file(root, root.name, defaults, max_bytes), seen)


def iter_records(
    records: Iterable[Mapping[str, Any]],
    *,
    default_acl: Iterable[str] = (),
    default_public: bool = False,
    default_deny: Iterable[str] = (),
    source: str = "<record>",
) -> Iterator[Document | ReadFailure]:
    """Documents from Python mappings, validated exactly like ``.jsonl`` lines (failures name ``source[i]``)."""
    defaults = _defaults(default_acl, default_deny, default_public)
    seen: dict[str, str] = {}
    for i, rec in enumerate(records):
        where = f"{source}[{i}]"
        try:
            doc = _record_to_document(rec, defaults, source=where)
        except _RecordError as exc:
            yield ReadFailure(where, exc.error, exc.fix, kind=exc.kind)
            continue
        yield from _dedup(iter([doc]), seen)


def decode_bytes(data: bytes, source: str = "<bytes>", declared: str | None = None) -> tuple[str, str]:
    """``(text, encoding)`` for ``data``: UTF-8 (BOM or not), UTF-16/32 with a BOM, the ``declared``
    encoding (e.g. an HTML ``<meta charset>``) if it decodes cleanly, else a confident legacy CJK detection
    (GB18030, Big5, Shift_JIS, EUC-JP, EUC-KR). The BOM is removed; nothing else is changed.
    Raises InputError naming ``source`` for binary data and for text that cannot be decoded confidently."""
    try:
        return _decode(data, source, declared)
    except _RecordError as exc:
        raise InputError(f"{source}: {exc.error}; {exc.fix}") from None


def _decode(data: bytes, source: str, declared: str | None = None) -> tuple[str, str]:
    for bom, enc in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError as exc:
                raise _RecordError(
                    f"starts with a {enc} byte-order mark but is not valid {enc} ({exc.reason} at byte {exc.start})",
                    "re-save it as UTF-8",
                ) from None
    for sig, (what, fix) in _BINARY_SIGNATURES.items():
        if data.startswith(sig):
            raise _RecordError(f"binary file ({what})", fix)
    if b"\x00" in data:
        raise _RecordError(
            "binary file (contains NUL bytes); only text files are read",
            "if it is UTF-16 text without a byte-order mark, convert it: "
            f"`iconv -f UTF-16LE -t UTF-8 {source} > {source}.utf8`",
        )
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = f"{exc.reason} at byte {exc.start}"
    if declared:
        try:
            return data.decode(declared), codecs.lookup(declared).name
        except (UnicodeDecodeError, LookupError):
            pass
    detected = _detect_cjk(data)
    if detected is not None:
        return data.decode(detected), detected
    guess = _guess_any(data)
    hint = f"it looks like {guess}; " if guess else ""
    raise _RecordError(
        f"not valid UTF-8 ({utf8_error}) and not confidently GB18030/Big5/Shift_JIS/EUC-JP/EUC-KR",
        f"{hint}convert it to UTF-8, e.g. `iconv -f {guess or 'GB18030'} -t UTF-8 {source} > {source}.utf8`",
    )


# ---------------------------------------------------------------------------------------- files


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
                    "give every document a unique id (ingest the folders separately or rename)",
                )  # fmt: skip
                continue
            seen[item.id] = item.source
        yield item


def _read_file(
    path: Path, doc_id: str, defaults: tuple[tuple[str, ...], tuple[str, ...], bool], max_bytes: int
) -> Iterator[Document | ReadFailure]:
    src = str(path)
    ext = path.suffix.lower()
    try:
        size = path.stat().st_size
    except OSError as exc:
        yield ReadFailure(src, f"cannot read: {exc.strerror}", "check the file's permissions")
        return
    if ext == ".jsonl":
        yield from _read_jsonl(path, defaults)
        return
    if size > max_bytes:
        yield ReadFailure(
            src, f"file is {size:,} bytes, over the {max_bytes:,}-byte limit",
            "split it into smaller files, or pass a larger max_bytes",
        )  # fmt: skip
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield ReadFailure(src, f"cannot read: {exc.strerror}", "check the file's permissions")
        return
    declared = None
    if ext in (".html", ".htm"):
        m = _META_CHARSET_RE.search(data[:4096])
        declared = m.group(1).decode("ascii") if m else None
    try:
        text, encoding = _decode(data, src, declared)
    except _RecordError as exc:
        yield ReadFailure(src, exc.error, exc.fix)
        return
    title = ""
    fmt = ext.lstrip(".")
    if ext in (".html", ".htm"):
        title, text = _html_to_text(text)
        fmt = "html"
    elif ext in (".md", ".markdown"):
        title = _markdown_title(text)
        fmt = "md"
    if not text.strip():
        yield ReadFailure(
            src, "empty or whitespace-only file", "nothing to index; add text or remove it", "skipped"
        )
        return
    acl, deny, public = defaults
    yield Document(
        id=doc_id,
        text=text,
        title=title or path.stem,
        acl=acl,
        deny=deny,
        public=public,
        metadata={"format": fmt, "encoding": encoding},
        source=src,
    )


def _markdown_title(text: str) -> str:
    m = re.search(r"^[ ]{0,3}#[ \t]+(.+?)[ \t#]*$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


_BLOCK_TAGS = (
    "p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table",
    "section", "article", "header", "footer", "nav", "aside", "main", "pre", "blockquote", "hr", "figure",
    "figcaption", "form", "fieldset", "address", "details", "summary", "caption", "th", "td",
)  # fmt: skip


def _html_to_text(html: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page: script/style dropped, block elements on their own lines."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if title_tag else ""
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    raw = soup.get_text()
    lines = [" ".join(line.split()) for line in raw.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not title:
        h1 = soup.find("h1")
        title = " ".join(h1.get_text().split()) if h1 else ""
    return title, text


def _detect_cjk(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(data, cp_isolation=list(CJK_ENCODINGS)).best()
    if best is None or best.chaos > _MAX_CHAOS:
        return None
    enc = str(best.encoding)
    try:
        text = data.decode(enc)
    except (UnicodeDecodeError, LookupError):
        return None
    bad = len(_SUSPICIOUS_RE.findall(text))  # replacement / private-use characters: a wrong guess
    return enc if bad <= len(text) // 100 else None


def _guess_any(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(data[:65536]).best()
    return str(best.encoding).upper().replace("_", "-") if best is not None else None


# ------------------------------------------------------------------------------------------ jsonl


def _read_jsonl(
    path: Path, defaults: tuple[tuple[str, ...], tuple[str, ...], bool]
) -> Iterator[Document | ReadFailure]:
    src = str(path)
    seen_any = False
    try:
        f = path.open("rb")
    except OSError as exc:
        yield ReadFailure(src, f"cannot read: {exc.strerror}", "check the file's permissions")
        return
    with f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{src}:{lineno}"
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            seen_any = True
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield ReadFailure(
                    where, f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                    f"JSON Lines must be UTF-8: `iconv -f GB18030 -t UTF-8 {src}` (use the file's real encoding)",
                )  # fmt: skip
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield ReadFailure(
                    where, f"invalid JSON ({exc.msg} at column {exc.colno})", "write one JSON object per line"
                )
                continue
            try:
                yield _record_to_document(rec, defaults, source=where)
            except _RecordError as exc:
                yield ReadFailure(where, exc.error, exc.fix, kind=exc.kind)
    if not seen_any:
        yield ReadFailure(src, "empty jsonl file", "nothing to index; add records or remove it", "skipped")


# ---------------------------------------------------------------------------------------- records


def _defaults(
    acl: Iterable[str], deny: Iterable[str], public: bool
) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    acl_t = _str_tuple(acl, "default_acl")
    deny_t = _str_tuple(deny, "default_deny")
    if not isinstance(public, bool):
        raise InputError(f"default_public must be true or false, got {public!r}")
    return acl_t, deny_t, public


def _str_tuple(value: Iterable[str], name: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise InputError(f"{name} must be a list of principals such as ['group:support'], got {value!r}")
    out = tuple(value)
    for p in out:
        if not isinstance(p, str) or not p.strip():
            raise InputError(f"{name} entries must be non-empty strings, got {p!r}")
    return out


def _principals(rec: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    if key not in rec or rec[key] is None:
        return None
    value = rec[key]
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise _RecordError(
            f"field '{key}' must be a list of non-empty strings, got {value!r}",
            f'write it like "{key}": ["group:support", "user:alice"]',
        )
    return tuple(value)


def _record_to_document(
    rec: Any, defaults: tuple[tuple[str, ...], tuple[str, ...], bool], *, source: str
) -> Document:
    if not isinstance(rec, Mapping):
        raise _RecordError(
            f"record must be a JSON object, got {type(rec).__name__}", 'write {"id": ..., "text": ...}'
        )
    unknown = sorted(str(k) for k in rec if k not in _RECORD_FIELDS)
    if unknown:
        raise _RecordError(
            f"unknown field(s) {', '.join(repr(k) for k in unknown)}",
            f"known fields: {', '.join(_RECORD_FIELDS)}; put anything else under 'metadata'",
        )
    rid = rec.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or (isinstance(rid, str) and not rid.strip()):
        raise _RecordError(
            f"field 'id' is required: a non-empty string or integer, got {rid!r}", 'add "id": "doc-1"'
        )
    text = rec.get("text")
    if not isinstance(text, str):
        raise _RecordError(
            f"field 'text' is required and must be a string, got {text!r}", 'add "text": "..."'
        )
    title = rec.get("title")
    title = "" if title is None else title
    if not isinstance(title, str):
        raise _RecordError(f"field 'title' must be a string, got {title!r}", 'write "title": "..."')
    public = rec.get("public")
    if public is not None and not isinstance(public, bool):
        raise _RecordError(f"field 'public' must be true or false, got {public!r}", 'write "public": true')
    metadata = rec.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise _RecordError(
            f"field 'metadata' must be an object, got {metadata!r}", 'write "metadata": {"category": "faq"}'
        )
    language = rec.get("language")
    if language is not None and (not isinstance(language, str) or not _LANGUAGE_RE.match(language)):
        raise _RecordError(
            f"field 'language' must be a language code such as zh, ja, ko, en, got {language!r}",
            'write "language": "zh" (or leave it out to detect per script)',
        )
    tenant = rec.get("tenant")
    tenant = "" if tenant is None else tenant
    if not isinstance(tenant, str):
        raise _RecordError(f"field 'tenant' must be a string, got {tenant!r}", 'write "tenant": "acme"')
    acl = _principals(rec, "acl")
    deny = _principals(rec, "deny")
    if not text.strip():
        raise _RecordError("field 'text' is empty", "nothing to index; give the record some text", "skipped")
    d_acl, d_deny, d_public = defaults
    return Document(
        id=str(rid),
        text=text,
        title=title,
        acl=d_acl if acl is None else acl,
        deny=d_deny if deny is None else deny,
        public=d_public if public is None else public,
        metadata=dict(metadata),
        language=language.split("-")[0].split("_")[0].lower() if language else None,
        tenant=tenant,
        source=source,
    )
