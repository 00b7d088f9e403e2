"""From a Document and its chunks to the ChunkRecords every store keeps (ids, hashes, access fields)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence

from cjkrag.connectors.filters import validate_principal
from cjkrag.errors import AccessError, FilterError
from cjkrag.ingest.citations import chunk_metadata
from cjkrag.types import Chunk, ChunkRecord, Document


def normalize_access(doc: Document) -> Document:
    """``doc`` with its acl/deny entries in the one principal normal form (``validate_principal``:
    trimmed, Unicode NFC, validated), duplicates removed, order kept.

    Every document passes here before it is hashed or stored, whatever its source (files, JSONL records,
    Documents given to ``Engine.ingest``), so a deny entry written in NFD or with a trailing space denies
    exactly the principal it names. Raises AccessError naming the document and the bad entry.
    """
    lists: dict[str, tuple[str, ...]] = {}
    for name in ("acl", "deny"):
        value = getattr(doc, name)
        if isinstance(value, (str, bytes)):
            raise AccessError(
                f"document {doc.id!r}: {name} is one string {value!r}, not a list: write [{value!r}]"
            )
        out: dict[str, None] = {}
        for i, entry in enumerate(value):
            try:
                out[validate_principal(entry)] = None
            except FilterError as exc:
                raise AccessError(
                    f"document {doc.id!r} ({doc.source or 'record'}): {name}[{i}]: {exc}; fix the entry and "
                    "ingest the document again"
                ) from None
        lists[name] = tuple(out)
    if lists["acl"] == tuple(doc.acl) and lists["deny"] == tuple(doc.deny):
        return doc
    return dataclasses.replace(doc, acl=lists["acl"], deny=lists["deny"])


def _h(*parts: str, size: int = 16) -> str:
    digest = hashlib.blake2b(digest_size=size)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def document_hash(doc: Document, *, settings: str) -> str:
    """Changes whenever anything stored for the document would change (text, access, metadata, settings)."""
    meta = json.dumps(dict(doc.metadata), sort_keys=True, ensure_ascii=False, default=str)
    access = json.dumps([sorted(doc.acl), sorted(doc.deny), doc.public, doc.tenant], ensure_ascii=False)
    return _h(doc.text, doc.title, access, meta, doc.language or "", settings)


def chunk_id(doc_id: str, index: int, text: str) -> str:
    """Deterministic: the document id, the chunk index and the chunk's content hash."""
    return f"{_h(doc_id, size=10)}-{index:05d}-{_h(text, size=6)}"


def build_records(
    doc: Document,
    chunks: Sequence[Chunk],
    vectors: Sequence[Sequence[float]],
    keywords: Sequence[list[str]],
    doc_hash: str,
) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            chunk_id=chunk_id(doc.id, c.index, c.text),
            doc_id=doc.id,
            text=c.text,
            start=c.start,
            end=c.end,
            chunk_index=c.index,
            title=doc.title,
            acl=list(doc.acl),
            deny=list(doc.deny),
            public=doc.public,
            metadata=chunk_metadata(doc, c),  # + page/slide/sheet/section of this chunk (citations)
            vector=[float(x) for x in vec],
            keywords=kw,
            doc_hash=doc_hash,
            tenant=doc.tenant,
            language=doc.language or "",
        )
        for c, vec, kw in zip(chunks, vectors, keywords, strict=True)
    ]
