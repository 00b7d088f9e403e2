"""The ingestion job: documents -> chunks (model tokens) -> keywords + vectors -> upsert with the ACL.

Idempotent, incremental and resumable by construction:
- each document carries a ``doc_hash`` (text + access + metadata + settings); a document whose stored
  chunks all carry the same hash is skipped as unchanged;
- chunk ids are deterministic, so re-running upserts the same ids; new chunks are written *before* the
  document's stale chunks are deleted, so a crash at any point loses nothing and the next run repairs it;
- one bad document is recorded as failed and the job goes on.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cjkrag.errors import AccessError, CjkragError, StoreError, StoreUnavailable
from cjkrag.ingest.chunker import keyword_text
from cjkrag.ingest.records import build_records, document_hash
from cjkrag.types import Document

if TYPE_CHECKING:
    from cjkrag.connectors.protocol import VectorStore
    from cjkrag.ingest.embedding.protocol import Embedder
    from cjkrag.pipeline.analyzer import CJKAnalyzer

log = logging.getLogger("cjkrag.ingest")


@dataclass
class Failure:
    source: str
    error: str
    fix: str = ""
    kind: str = "failed"  # failed | skipped


@dataclass
class IngestReport:
    documents: int = 0  # documents written (new or changed)
    unchanged: int = 0  # documents already stored with the same content and access
    chunks: int = 0  # chunks written
    deleted_chunks: int = 0  # stale chunks removed after a document changed
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Failure]:
        return [f for f in self.failures if f.kind == "failed"]

    @property
    def skipped(self) -> list[Failure]:
        return [f for f in self.failures if f.kind == "skipped"]

    def summary(self) -> str:
        return (
            f"{self.documents} documents ({self.chunks} chunks) written, {self.unchanged} unchanged, "
            f"{len(self.skipped)} skipped, {len(self.failed)} failed in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "unchanged": self.unchanged,
            "chunks": self.chunks,
            "deleted_chunks": self.deleted_chunks,
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "seconds": round(self.seconds, 3),
            "failures": [asdict(f) for f in self.failures],
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")


@dataclass
class IngestJob:
    store: VectorStore
    embedder: Embedder
    analyzer: CJKAnalyzer
    max_tokens: int = 512
    overlap_tokens: int = 64
    batch_size: int = 64
    settings_tag: str = ""  # anything that changes stored chunks beyond the document (model, chunking)
    on_progress: Callable[[int, int], None] | None = None  # (documents done, chunks written) increments

    def run(self, items: Iterable[Document | Any]) -> IngestReport:
        """Ingest documents; ``items`` may contain read failures (anything with ``source``/``error``).

        Small documents are embedded together (batches of ``batch_size`` chunks, which the embedder sorts
        by length); a batch that fails is retried one document at a time so only the bad one fails.
        """
        report = IngestReport()
        t0 = time.perf_counter()
        self.store.ensure_collection(self.embedder.dim)
        pending: list[_Prepared] = []
        for item in items:
            if not isinstance(item, Document):
                kind = getattr(item, "kind", "failed")
                report.failures.append(Failure(item.source, item.error, getattr(item, "fix", ""), kind))
                self._tick(1, 0)
                continue
            prepared = self._guard(item, report, functools.partial(self._prepare, item, report))
            if prepared is None:
                self._tick(1, 0)
                continue
            pending.append(prepared)
            if sum(len(p.chunks) for p in pending) >= self.batch_size:
                self._flush(pending, report)
                pending = []
        if pending:
            self._flush(pending, report)
        report.seconds = time.perf_counter() - t0
        return report

    def _guard(self, doc: Document, report: IngestReport, step: Callable[[], Any]) -> Any:
        """Run ``step`` for one document; record its failure and return None instead of raising."""
        try:
            return step()
        except StoreUnavailable:
            raise  # the store is gone: every later document would fail too; stop with the real cause
        except CjkragError as exc:
            report.failures.append(Failure(_label(doc), str(exc), _fix_for(exc)))
            log.warning("document %s failed: %s", _label(doc), exc)
        except Exception as exc:  # one bad document never stops the job
            log.exception("document %s failed unexpectedly", _label(doc))
            report.failures.append(Failure(_label(doc), f"{type(exc).__name__}: {exc}"))
        return None

    def _prepare(self, doc: Document, report: IngestReport) -> _Prepared | None:
        from cjkrag.connectors.filters import Condition
        from cjkrag.ingest.chunker import chunk_text, with_language

        doc = with_language(doc)  # one language per document, stored on every chunk
        if not doc.acl and not doc.public:
            raise AccessError(
                f"document {doc.id!r} has no access rule (no acl, not public): nobody could read it. "
                "Give it an `acl` list or `public: true` in the record, or pass --acl PRINCIPAL / --public"
            )
        dhash = document_hash(doc, settings=self.settings_tag)
        existing = self.store.query(Condition("doc_id", "==", doc.id), ["chunk_id", "doc_hash"])
        if existing and all(row.get("doc_hash") == dhash for row in existing):
            report.unchanged += 1
            return None
        chunks = chunk_text(doc.text, self.embedder, max_tokens=self.max_tokens, overlap_tokens=self.overlap_tokens)
        if not chunks:
            report.failures.append(Failure(_label(doc), "document has no text", "", "skipped"))
            return None
        return _Prepared(doc, dhash, [str(r["chunk_id"]) for r in existing], chunks)

    def _flush(self, pending: list[_Prepared], report: IngestReport) -> None:
        if len(pending) == 1:
            p = pending[0]
            if self._guard(p.doc, report, lambda: self._write(p, report)) is None:
                self._tick(1, 0)
            return
        try:
            self._write_many(pending, report)
        except StoreUnavailable:
            raise
        except Exception as exc:  # isolate the bad document
            log.info("batch of %d documents failed (%s); retrying one by one", len(pending), exc)
            for p in pending:
                self._flush([p], report)

    def _write_many(self, pending: list[_Prepared], report: IngestReport) -> None:
        texts = [c.text for p in pending for c in p.chunks]
        langs = [p.doc.language for p in pending for _ in p.chunks]
        vectors = self.embedder.embed_passages(texts).tolist()
        keywords = self.analyzer.analyze_many([keyword_text(p.doc, c) for p in pending for c in p.chunks], langs)
        records = []
        at = 0
        for p in pending:
            n = len(p.chunks)
            records.extend(build_records(p.doc, p.chunks, vectors[at : at + n], keywords[at : at + n], p.doc_hash))
            at += n
        self.store.upsert(records)
        report.chunks += len(records)
        for p in pending:
            self._delete_stale(p, {r.chunk_id for r in records if r.doc_id == p.doc.id}, report)
        report.documents += len(pending)
        self._tick(len(pending), len(records))

    def _write(self, p: _Prepared, report: IngestReport) -> bool:
        """One document, in batches of chunks (a huge document streams through)."""
        written: set[str] = set()
        for batch in _batches(p.chunks, self.batch_size):
            texts = [c.text for c in batch]
            vectors = self.embedder.embed_passages(texts).tolist()
            keywords = self.analyzer.analyze_many([keyword_text(p.doc, c) for c in batch], [p.doc.language] * len(texts))
            records = build_records(p.doc, batch, vectors, keywords, p.doc_hash)
            self.store.upsert(records)
            written.update(r.chunk_id for r in records)
            report.chunks += len(records)
            self._tick(0, len(records))
        self._delete_stale(p, written, report)
        report.documents += 1
        self._tick(1, 0)
        return True

    def _delete_stale(self, p: _Prepared, written: set[str], report: IngestReport) -> None:
        stale = [cid for cid in p.existing if cid not in written]
        if not stale:
            return
        try:
            self.store.delete(ids=stale)
            report.deleted_chunks += len(stale)
        except StoreError as exc:  # the new chunks are in; the stale ones go on the next run
            log.warning("could not delete %d stale chunks of %s: %s", len(stale), p.doc.id, exc)

    def _tick(self, docs: int, chunks: int) -> None:
        if self.on_progress is not None:
            self.on_progress(docs, chunks)


@dataclass
class _Prepared:
    doc: Document
    doc_hash: str
    existing: list[str]  # chunk ids already stored for the document
    chunks: list[Any]


def _batches(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _label(doc: Document) -> str:
    """Where the document came from, with its id when the source does not already show it."""
    if not doc.source:
        return doc.id
    return doc.source if doc.id in doc.source else f"{doc.source} (id {doc.id!r})"


def _fix_for(exc: Exception) -> str:
    return "see the error; fix the document and re-run (unchanged documents are skipped)"
