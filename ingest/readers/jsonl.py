"""JSON Lines files and Python record mappings: one validated Document per record (id, text, title, acl,
deny, public, metadata, language, tenant); a bad line fails alone."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cjkrag.errors import InputError
from cjkrag.ingest.readers.base import ReaderError as _RecordError
from cjkrag.ingest.readers.base import ReadFailure
from cjkrag.types import Document

Defaults = tuple[tuple[str, ...], tuple[str, ...], bool]
_RECORD_FIELDS = ("id", "text", "title", "acl", "deny", "public", "metadata", "language", "tenant")
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


def read_jsonl(
    path: Path, defaults: Defaults
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
                yield record_to_document(rec, defaults, source=where)
            except _RecordError as exc:
                yield ReadFailure(where, exc.error, exc.fix, kind=exc.kind)
    if not seen_any:
        yield ReadFailure(src, "empty jsonl file", "nothing to index; add records or remove it", "skipped")


# ---------------------------------------------------------------------------------------- records


def make_defaults(
    acl: Iterable[str], deny: Iterable[str], public: bool
) -> Defaults:
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


def record_to_document(
    rec: Any, defaults: Defaults, *, source: str
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
