"""The ingestion job: documents -> chunks (model tokens) -> keywords + vectors -> upsert with the ACL -> manifest.

Correct by construction (see ``ingest/manifest.py`` for the write protocol):
- a document counts as stored only once all its chunks are in and its stale chunks are gone: its manifest
  entry is written LAST; a crash or an error anywhere before leaves it to be redone by the next run;
- unchanged documents are skipped by one batched manifest lookup per batch of documents (no store query);
- a changed document's new chunks are upserted before its stale chunks are deleted (it never disappears
  from search); if the stale chunks cannot be deleted (e.g. chunks with a revoked ACL) the document is
  reported failed and redone next run, never counted as written;
- an access-only (or analyzer-only) change reuses the stored vectors: nothing is re-embedded;
- a document id already stored from a different source folder is an error for that document.

Stages overlap: this thread reads, looks up, chunks and analyzes; one thread embeds (token-budget batches
of length-sorted chunks); one thread writes (batched upserts, stale deletes, manifest commits). Queues
between them are bounded, so memory stays flat on a corpus of any size. With ``prep_workers`` chunking and
analysis run in worker processes (ingest/pool.py); with ``ray`` Ray actors chunk, analyze and embed
(ingest/ray_engine.py). Either way they run :meth:`IngestJob.fill`, and this process stays the only writer.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cjkrag.errors import AccessError, CjkragError, InputError, StoreError, StoreUnavailable
from cjkrag.ingest.chunker import (
    chunk_context,
    context_tokens,
    fit_context,
    keyword_text,
    with_context,
    with_language,
)
from cjkrag.ingest.manifest import Entry, Manifest, Versions, access_hash, content_hash
from cjkrag.ingest.records import chunk_id, document_hash
from cjkrag.ingest.report import Failure, IngestReport
from cjkrag.types import Chunk, Document

if TYPE_CHECKING:
    from cjkrag.connectors.protocol import VectorStore
    from cjkrag.ingest.embedding.protocol import Embedder
    from cjkrag.pipeline.analyzer import CJKAnalyzer

__all__ = ["Failure", "IngestJob", "IngestReport", "Origin", "Progress", "delete_documents"]

log = logging.getLogger("cjkrag.ingest")

RECORDS_ROOT = "<records>"
LOOKUP_DOCS = 256  # documents per manifest lookup


@dataclass(frozen=True)
class Origin:
    """Where documents came from: the folder/file given (resolved) and the user's --source-id."""

    root: str = RECORDS_ROOT
    source_id: str = ""


class Progress:
    """Counters the job bumps (thread-safe enough: ints under the GIL); ``callback`` sees the increments."""

    def __init__(self, callback: Callable[..., None] | None = None, *, rich: bool = False) -> None:
        self.callback, self.rich = callback, rich

    def update(self, docs: int = 0, chunks: int = 0, tokens: int = 0, failed: int = 0) -> None:
        if self.callback is None:
            return
        if self.rich:
            self.callback(docs=docs, chunks=chunks, tokens=tokens, failed=failed)
        elif docs or chunks:
            self.callback(docs, chunks)


@dataclass
class Work:
    """One document on its way through the stages."""

    doc: Document
    entry: Entry  # what the manifest will say once it is stored
    old: Entry | None  # what the manifest says now
    chunks: list[Chunk]
    passages: list[str]  # the text embedded per chunk
    keywords: list[list[str]]
    doc_hash: str
    vectors: list[Any] = field(default_factory=list)  # one per chunk once embedded (or reused)
    reused: bool = False
    origin: Origin = Origin()


@dataclass
class IngestJob:
    store: VectorStore
    embedder: Embedder
    analyzer: CJKAnalyzer
    manifest: Manifest | None = None  # None: an in-memory manifest (tests, one-off jobs)
    max_tokens: int = 512
    overlap_tokens: int = 64
    batch_size: int = 64  # chunks per write batch (and the embedding window unit)
    token_budget: int = 16384  # padded tokens per embedding batch (length-sorted chunks)
    settings_tag: str = ""  # legacy: folded into Versions when versions is not given
    versions: Versions | None = None
    on_progress: Callable[..., None] | None = None
    progress: Progress | None = None
    sync: bool = False  # delete documents gone from the roots given
    dry_run: bool = False
    max_delete_share: float = 0.5  # --sync refuses to delete more than this share of documents without yes
    yes: bool = False
    queue_docs: int = 64  # bounded queues between stages, in documents
    context_keywords: bool = True  # the chunk's context line (title, section path) in its keywords
    context_embedding: bool = False  # ... and in its embedded text, inside max_tokens (chunking.context)
    #: None: this process runs every stage; a RayOptions: Ray workers chunk, analyze and embed, this process
    #: (the single writer) upserts and commits the manifest (ingest/ray_engine.py)
    ray: Any = None
    #: > 0: this many worker processes chunk and analyze (ingest/pool.py), so that work leaves the embedding
    #: process; needs worker_config. 0: the reading thread does it
    prep_workers: int = 0
    worker_config: dict[str, Any] | None = None  # embedding/chunking/analyzer config for workers to rebuild models

    @property
    def remote_prep(self) -> bool:
        return self.ray is not None or self.prep_workers > 0

    def worker_args(self) -> dict[str, Any]:
        """What a worker's own job (process pool, Ray actor) needs to fill a Work exactly as this one would."""
        return {"max_tokens": self.max_tokens, "overlap_tokens": self.overlap_tokens, "versions": self.versions,
                "token_budget": self.token_budget, "batch_size": self.batch_size,
                "context_keywords": self.context_keywords, "context_embedding": self.context_embedding}  # fmt: skip

    def __post_init__(self) -> None:
        if self.manifest is None:
            self.manifest = Manifest(":memory:")
        if self.versions is None:
            tag = self.settings_tag
            self.versions = Versions(model=f"{self.embedder.name}|{tag}", chunker=f"{self.max_tokens}|"
                                     f"{self.overlap_tokens}|{tag}", analyzer=tag)  # fmt: skip
        if self.progress is None:
            self.progress = Progress(self.on_progress)

    # -- the run ---------------------------------------------------------------------------------------
    def run(self, items: Iterable[Any], roots: Sequence[str] = ()) -> IngestReport:
        """Ingest ``items``: Documents, read failures (``source``/``error``), or ``(Origin, item)`` pairs.

        ``roots``: the folders/files given, resolved; with ``sync`` their documents not seen are deleted.
        """
        report = IngestReport(dry_run=self.dry_run)
        t0 = time.perf_counter()
        if not self.dry_run:
            self.store.ensure_collection(self.embedder.dim)
            self._reconcile()
        stages = None if self.dry_run else self._stages(report)
        seen: set[str] = set()
        failed_sources: set[str] = set()
        prep_s = 0.0
        try:
            for batch in _batched(_with_origin(items), LOOKUP_DOCS):
                tb = time.perf_counter()
                docs = [(o, it) for o, it in batch if isinstance(it, Document)]
                known = self._m.get_many(d.id for _, d in docs)
                for origin, item in batch:
                    if not isinstance(item, Document):
                        self._read_failure(origin, item, report, failed_sources)
                        continue
                    plan = functools.partial(self._plan, origin, item, known, seen, report)
                    work = self._guard(item, origin, report, plan)
                    if work is not None and stages is not None:
                        prep_s += time.perf_counter() - tb
                        stages.put(work)  # blocks while the embedder is behind (bounded)
                        tb = time.perf_counter()
                prep_s += time.perf_counter() - tb
            if stages is not None:
                stages.finish()
                stages = None
            if self.sync:
                self._sync(roots, seen, failed_sources, report)
        finally:
            if stages is not None:
                stages.abort()
        report.stages["prepare"] = prep_s
        report.seconds = time.perf_counter() - t0
        return report

    def _stages(self, report: IngestReport) -> Any:
        if self.ray is None and self.prep_workers > 0:
            from cjkrag.ingest.pool import PoolStages

            return PoolStages(self, report)
        if self.ray is None:
            from cjkrag.ingest.stages import Stages

            return Stages(self, report)
        from cjkrag.ingest.ray_engine import RayStages

        return RayStages(self, report, self.ray)

    @property
    def _m(self) -> Manifest:
        assert self.manifest is not None
        return self.manifest

    def _reconcile(self) -> None:
        """The manifest must describe this store: a dropped/recreated collection empties it; a store
        filled before the manifest existed is adopted (each document redone once, old chunks cleaned)."""
        have = len(self._m)
        stored = self.store.count()
        if have and stored == 0:
            log.warning("collection is empty but the manifest %s lists %d documents: starting over", self._m.path, have)
            self._m.clear()
        elif not have and stored:
            rows = self.store.query(None, ["doc_id", "chunk_id"], limit=stored)
            n = self._m.adopt((str(r["doc_id"]), str(r["chunk_id"])) for r in rows)
            log.warning("adopted %d documents stored before the manifest existed; each is redone once", n)

    def _read_failure(self, origin: Origin, item: Any, report: IngestReport, failed: set[str]) -> None:
        kind = getattr(item, "kind", "failed")
        src = str(item.source)
        failed.add(src)
        failed.add(src.rsplit(":", 1)[0])  # a jsonl line: keep the file's documents from --sync deletion
        report.failures.append(Failure(src, item.error, getattr(item, "fix", ""), kind, path=_file_of(src),
                                       root=origin.root))  # fmt: skip
        self.progress_update(docs=1, failed=int(kind == "failed"))

    def _guard(self, doc: Document, origin: Origin, report: IngestReport, step: Callable[[], Any]) -> Any:
        """Run ``step`` for one document; record its failure and return None instead of raising."""
        try:
            return step()
        except StoreUnavailable:
            raise  # the store is gone: every later document would fail too; stop with the real cause
        except CjkragError as exc:
            self.fail(doc, origin, report, str(exc), _fix_for(exc))
        except Exception as exc:  # one bad document never stops the job
            log.exception("document %s failed unexpectedly", _label(doc))
            self.fail(doc, origin, report, f"{type(exc).__name__}: {exc}", "report this as a bug, with the file")
        return None

    def fail(self, doc: Document, origin: Origin, report: IngestReport, error: str, fix: str) -> None:
        log.warning("document %s failed: %s", _label(doc), error)
        report.failures.append(Failure(_label(doc), error, fix, "failed", doc_id=doc.id,
                                       path=_file_of(doc.source), root=origin.root))  # fmt: skip
        self.progress_update(docs=1, failed=1)

    def progress_update(self, **counts: int) -> None:
        assert self.progress is not None
        self.progress.update(**counts)

    # -- per document: decide, chunk, analyze ----------------------------------------------------------
    def _prepare(self, doc: Document) -> Document:
        """The one place every document's acl/deny is normalized (AccessError on a bad principal)."""
        from cjkrag.ingest.records import normalize_access

        return normalize_access(doc)

    def _plan(self, origin: Origin, doc: Document, known: dict[str, Entry], seen: set[str],
              report: IngestReport) -> Work | None:  # fmt: skip
        if doc.id in seen:
            raise InputError(
                f"document id {doc.id!r} appears twice in this run (again in {doc.source or 'a record'}): "
                "ids must be unique; rename one, or give each folder its own --source-id"
            )
        seen.add(doc.id)
        doc = self._prepare(doc)
        doc = with_language(doc)  # one language per document (before the hashes), stored on every chunk
        if not doc.acl and not doc.public:
            raise AccessError(
                f"document {doc.id!r} has no access rule (no acl, not public): nobody could read it. "
                "Give it an `acl` list or `public: true` in the record, or pass --acl PRINCIPAL / --public"
            )
        old = known.get(doc.id)
        if old is not None and old.complete and old.root and old.root != origin.root:
            raise InputError(
                f"document id {doc.id!r} is already stored from {old.root!r} (file {old.source!r}); this run "
                f"reads it from {origin.root!r}. Nothing was replaced. Give this folder its own namespace "
                f"(--source-id NAME), or, if the document moved, delete the old one first "
                f"(`cjkrag delete --doc-id {doc.id}` or `cjkrag delete --source {old.root}`)"
            )
        assert self.versions is not None
        chash, ahash = content_hash(doc), access_hash(doc)
        if old is not None and old.complete and (old.content_hash, old.access_hash, old.versions) == (
            chash, ahash, self.versions
        ):
            report.unchanged += 1
            self.progress_update(docs=1)
            return None
        if self.dry_run:
            report.planned_writes.append(doc.id)
            return None
        entry = Entry(doc.id, origin.root, origin.source_id, doc.source, chash, ahash, self.versions, [])
        work = Work(doc, entry, old, [], [], [], document_hash(doc, settings=_settings(self.versions)), origin=origin)
        if self.remote_prep:  # the Ray engine: its workers chunk, analyze and embed (see ingest/ray_engine.py)
            return work
        self.fill(work)
        return self.finish_plan(work, report)

    def fill(self, work: Work) -> None:
        """Chunk, build the embedded passages and the keywords, name the chunks (pure: no store, no manifest)."""
        doc = work.doc
        work.chunks = self._chunks_for(doc)
        work.passages = self._passages_for(doc, work.chunks)
        texts = [keyword_text(doc, c) if self.context_keywords else c.text for c in work.chunks]
        work.keywords = self.analyzer.analyze_many(texts, [doc.language] * len(work.chunks))
        work.entry.chunk_ids = [chunk_id(doc.id, c.index, c.text) for c in work.chunks]

    def vectors_reusable(self, work: Work) -> bool:
        """Same text, chunker and model as stored: the stored vectors can be read back instead of embedding."""
        old, v = work.old, self.versions
        assert v is not None
        return (
            old is not None and old.complete and old.content_hash == work.entry.content_hash
            and (old.versions.model, old.versions.chunker) == (v.model, v.chunker)
        )  # fmt: skip

    def finish_plan(self, work: Work, report: IngestReport) -> Work | None:
        """After :meth:`fill`: a document without text is reported; stored vectors are reused when they can be."""
        if not work.chunks:
            doc = work.doc
            report.failures.append(Failure(_label(doc), "document has no text", "nothing to index", "skipped",
                                           doc_id=doc.id, path=_file_of(doc.source), root=work.origin.root))  # fmt: skip
            return None
        if not work.reused and self.vectors_reusable(work):
            self._reuse_vectors(work)
        return work

    def _context_budget(self, doc: Document) -> int:
        """Tokens reserved in every chunk for the context line when it is embedded (at most a quarter of
        ``max_tokens``; a longer line is cut to fit, see :func:`~cjkrag.ingest.chunker.fit_context`)."""
        if not self.context_embedding:
            return 0
        return min(context_tokens(doc, self.embedder), self.max_tokens // 4)

    def _chunks_for(self, doc: Document) -> list[Chunk]:
        """The document's chunks; with the context embedded, each leaves room for its context line, so the
        embedded text still fits ``max_tokens`` and nothing is truncated."""
        from cjkrag.ingest.chunker import chunk_text

        reserve = self._context_budget(doc)
        budget = self.max_tokens - reserve
        overlap = self.overlap_tokens
        if reserve:
            text_tokens = budget - self.embedder.count_tokens("")
            overlap = min(overlap, max(0, (text_tokens - 1) // 2))
        return chunk_text(doc.text, self.embedder, max_tokens=budget, overlap_tokens=overlap)

    def _passages_for(self, doc: Document, chunks: Sequence[Chunk]) -> list[str]:
        """The text embedded for each chunk: the body, after its context line when ``context_embedding``."""
        reserve = self._context_budget(doc)
        if not reserve:
            return [c.text for c in chunks]
        return [with_context(fit_context(chunk_context(doc, c), self.embedder, reserve), c.text) for c in chunks]

    def _reuse_vectors(self, work: Work) -> None:
        """Same text, chunker and model: read the stored vectors back instead of embedding again."""
        from cjkrag.connectors.filters import Condition

        ids = work.entry.chunk_ids
        found: dict[str, Any] = {}
        try:
            for i in range(0, len(ids), 1024):
                part = ids[i : i + 1024]
                for row in self.store.query(Condition("chunk_id", "in", part), ["chunk_id", "vector"], limit=len(part)):
                    found[str(row["chunk_id"])] = row.get("vector")
        except StoreUnavailable:
            raise
        except StoreError as exc:  # a store that cannot return vectors: embed again
            log.info("cannot read stored vectors (%s); re-embedding %s", exc, work.doc.id)
            return
        if all(found.get(cid) is not None for cid in ids):
            work.vectors = [found[cid] for cid in ids]
            work.reused = True

    # -- sync ------------------------------------------------------------------------------------------
    def _sync(self, roots: Sequence[str], seen: set[str], failed: set[str], report: IngestReport) -> None:
        if not roots:
            return
        gone = sorted(
            e.doc_id for e in self._m.under_roots(roots) if e.doc_id not in seen and e.source not in failed
        )
        if not gone:
            return
        total = len(self._m)
        if self.dry_run:
            report.planned_deletes.extend(gone)
            return
        if len(gone) > self.max_delete_share * total and not self.yes:
            report.planned_deletes.extend(gone)
            report.failures.append(Failure(
                ", ".join(roots), f"--sync would delete {len(gone)} of {total} documents "
                f"(over the {self.max_delete_share:.0%} guard); nothing was deleted",
                "check the path (a wrong or unmounted folder looks empty); list them with --dry-run, then "
                "re-run with --yes, or raise ingest.sync_max_delete_share",
            ))  # fmt: skip
            return
        report.deleted_chunks += delete_documents(self.store, self._m, gone)
        report.deleted_documents.extend(gone)


def delete_documents(store: VectorStore, manifest: Manifest, doc_ids: Sequence[str]) -> int:
    """Delete documents' chunks (by doc id: no row cap) and their manifest entries; crash-safe (the entry
    stops counting as stored first, and goes last). Returns the number of chunks the manifest knew."""
    from cjkrag.connectors.filters import Condition

    if isinstance(doc_ids, str):
        raise TypeError("doc_ids must be a list of document ids, not one string")
    ids = list(dict.fromkeys(doc_ids))
    if not ids:
        return 0
    known = manifest.get_many(ids)
    manifest.mark_deleting(ids)
    crash_point("delete:marked")
    for i in range(0, len(ids), 1024):
        store.delete(filters=Condition("doc_id", "in", ids[i : i + 1024]))
        crash_point("delete:batch")
    manifest.remove(ids)
    return sum(len(e.known_ids()) for e in known.values())


def fill_works(job: IngestJob, works: Sequence[Work]) -> dict[int, tuple[str, str]]:
    """``job.fill`` each work (in a worker process or a Ray actor); {index: (error, fix)} for those that failed."""
    broken: dict[int, tuple[str, str]] = {}
    for i, w in enumerate(works):
        try:
            job.fill(w)
        except CjkragError as exc:
            broken[i] = (str(exc), _fix_for(exc))
        except Exception as exc:
            broken[i] = (f"{type(exc).__name__}: {exc}", "report this as a bug, with the file")
    return broken


def crash_point(name: str) -> None:
    """A deterministic crash for the kill tests: with ``CJKRAG_TEST_CRASH_AT=name`` this process dies here
    by SIGKILL (with its process group when it leads one, so an embedded store's server dies too)."""
    if os.environ.get("CJKRAG_TEST_CRASH_AT") != name:
        return
    import signal

    log.warning("CJKRAG_TEST_CRASH_AT=%s: killing this process now", name)
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _settings(v: Versions) -> str:
    return f"{v.model}|{v.chunker}|{v.analyzer}"


def _with_origin(items: Iterable[Any]) -> Iterator[tuple[Origin, Any]]:
    default = Origin()
    for it in items:
        if isinstance(it, tuple) and len(it) == 2 and isinstance(it[0], Origin):
            yield it
        else:
            yield default, it


def _batched(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for x in it:
        batch.append(x)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _file_of(source: str) -> str:
    if not source or source.startswith("<"):
        return ""
    head, sep, tail = source.rpartition(":")
    return head if sep and tail.isdigit() else source


def _label(doc: Document) -> str:
    """Where the document came from, with its id when the source does not already show it."""
    if not doc.source:
        return doc.id
    return doc.source if doc.id in doc.source else f"{doc.source} (id {doc.id!r})"


def _fix_for(exc: Exception) -> str:
    msg = str(exc)
    if isinstance(exc, (AccessError, InputError)) and ("--" in msg or "Give" in msg):
        return "see the error: it names the fix"
    if isinstance(exc, StoreError):
        return "the store rejected it; the document was not counted as stored and is retried on the next run"
    return "fix the document and re-run (unchanged documents are skipped; --retry-failed REPORT redoes only failures)"
