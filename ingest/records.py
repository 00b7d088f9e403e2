"""From a Document and its chunks to the ChunkRecords every store keeps (ids, hashes, access fields)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from cjkrag.ingest.citations import chunk_metadata
from cjkrag.types import Chunk, ChunkRecord, Document


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
