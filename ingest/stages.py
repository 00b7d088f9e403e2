"""The embed and write stages of an ingestion job, each on its own thread, fed by bounded queues.

The embed thread gathers a window of chunks from several documents, sorts them by token count and cuts
batches by a token budget (padded tokens per forward pass), so short chunks ride in big batches and long
ones in small ones. The write thread upserts in batches, deletes each document's stale chunks and commits
the manifest entries of the documents that are completely stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cjkrag.errors import StoreError, StoreUnavailable
from cjkrag.ingest.records import build_records

if TYPE_CHECKING:
    from cjkrag.ingest.embedding.protocol import Embedder
    from cjkrag.ingest.job import IngestJob, Work
    from cjkrag.ingest.report import IngestReport

log = logging.getLogger("cjkrag.ingest")

_END = object()
_POLL_S = 0.2


class Stages:
    def __init__(self, job: IngestJob, report: IngestReport) -> None:
        self.job, self.report = job, report
        self.q_embed: queue.Queue[Any] = queue.Queue(maxsize=job.queue_docs)
        self.q_write: queue.Queue[Any] = queue.Queue(maxsize=job.queue_docs)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        report.stages.setdefault("embed", 0.0)
        report.stages.setdefault("write", 0.0)
        self.threads = [
            threading.Thread(target=self._guarded, args=(self._embed_loop,), name="cjkrag-embed", daemon=True),
            threading.Thread(target=self._guarded, args=(self._write_loop,), name="cjkrag-write", daemon=True),
        ]
        for t in self.threads:
            t.start()

    # -- from the reading thread ------------------------------------------------------------------------
    def put(self, work: Work) -> None:
        self._put(self.q_embed, work)

    def finish(self) -> None:
        self._put(self.q_embed, _END)
        for t in self.threads:
            while t.is_alive():
                t.join(_POLL_S)
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)

    # -- plumbing -------------------------------------------------------------------------------------
    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self.error is not None:
                raise self.error
            if self.stop.is_set():
                raise RuntimeError("ingestion stopped")
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue[Any], block: bool = True) -> Any:
        while True:
            if self.stop.is_set():
                return _END
            try:
                return q.get(timeout=_POLL_S) if block else q.get_nowait()
            except queue.Empty:
                if not block:
                    return None

    def _take(self, q: queue.Queue[Any], first: Work, room: Callable[[list[Work]], bool]) -> tuple[list[Work], bool]:
        """``first`` plus what is already queued while ``room(batch)``; True when the end was reached."""
        batch = [first]
        while room(batch):
            more = self._get(q, block=False)
            if more is None:
                break
            if more is _END:
                return batch, True
            batch.append(more)
        return batch, False

    def _gather(self, q: queue.Queue[Any], first: Work, chunks: int) -> tuple[list[Work], bool]:
        """``first`` plus what is already queued, up to ``chunks`` chunks; True when the end was reached."""
        return self._take(q, first, lambda batch: sum(len(w.chunks) for w in batch) < chunks)

    def _gather_docs(self, q: queue.Queue[Any], first: Work, max_docs: int,
                     max_chars: int = 200_000) -> tuple[list[Work], bool]:  # fmt: skip
        """``first`` plus what is already queued, up to ``max_docs`` documents / ``max_chars`` of text."""
        return self._take(q, first, lambda batch: len(batch) < max_docs
                          and sum(len(w.doc.text) for w in batch) < max_chars)  # fmt: skip

    def _guarded(self, loop: Any) -> None:
        try:
            loop()
        except BaseException as exc:  # surfaced to the reading thread, which re-raises it
            self.error = exc
            self.stop.set()

    def _fail(self, work: Work, error: str, fix: str) -> None:
        with self.lock:
            self.job.fail(work.doc, work.origin, self.report, error, fix)

    # -- embed ----------------------------------------------------------------------------------------
    def _embed_loop(self) -> None:
        window = max(self.job.batch_size * 4, 256)
        done = False
        while not done:
            item = self._get(self.q_embed)
            if item is _END:
                break
            pending, done = self._gather(self.q_embed, item, window)
            t0 = time.perf_counter()
            ready = self._embed(pending)
            self.report.stages["embed"] += time.perf_counter() - t0
            for w in ready:
                self._put(self.q_write, w)
        self._put(self.q_write, _END)

    def _embed(self, works: list[Work]) -> list[Work]:
        tokens, padded, broken = embed_works(self.job.embedder, works, self.job.token_budget)
        self.report.tokens += tokens
        self.report.padded_tokens += padded
        self.job.progress_update(tokens=tokens)
        ready = []
        for w in works:
            if id(w) in broken:
                self._fail(w, broken[id(w)], EMBED_FIX)
            else:
                ready.append(w)
        return ready

    # -- write ----------------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            item = self._get(self.q_write)
            if item is _END:
                return
            batch, end = self._gather(self.q_write, item, self.job.batch_size)
            t0 = time.perf_counter()
            self._write(batch)
            self.report.stages["write"] += time.perf_counter() - t0
            if end:
                return

    def _write(self, batch: list[Work]) -> None:
        job = self.job
        assert job.manifest is not None
        job.manifest.begin([(w.entry, w.entry.chunk_ids) for w in batch])  # before any chunk is written
        ok: list[Work] = []
        try:
            self._upsert(batch)
            ok = batch
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], f"the store rejected its chunks: {exc}", _RETRY)
            else:
                for w in batch:
                    try:
                        self._upsert([w])
                        ok.append(w)
                    except StoreUnavailable:
                        raise
                    except Exception as exc1:
                        self._fail(w, f"the store rejected its chunks: {exc1}", _RETRY)
        stored: list[Work] = []
        for w in ok:
            stale = (w.old.known_ids() if w.old else set()) - set(w.entry.chunk_ids)
            if stale:
                try:
                    job.store.delete(ids=sorted(stale))
                except StoreUnavailable:
                    raise
                except StoreError as exc:
                    self._fail(w, f"its new chunks are in, but {len(stale)} old chunks (with the previous text "
                               f"or access rule) could not be deleted: {exc}", _RETRY)  # fmt: skip
                    continue
                self.report.deleted_chunks += len(stale)
            stored.append(w)
        job.manifest.commit([w.entry for w in stored])  # LAST: only now do these documents count as stored
        n = sum(len(w.chunks) for w in stored)
        self.report.documents += len(stored)
        self.report.reused += sum(w.reused for w in stored)
        self.report.chunks += n
        job.progress_update(docs=len(stored), chunks=n)

    def _upsert(self, works: Sequence[Work]) -> None:
        """All chunks of ``works``, in upserts of at most batch_size records (a huge document streams)."""
        size = self.job.batch_size
        buf: list[Any] = []
        for w in works:
            for s in range(0, len(w.chunks), size):
                sl = slice(s, s + size)
                buf.extend(build_records(w.doc, w.chunks[sl], w.vectors[sl], w.keywords[sl], w.doc_hash))
                while len(buf) >= size:
                    self.job.store.upsert(buf[:size])
                    buf = buf[size:]
        if buf:
            self.job.store.upsert(buf)


EMBED_FIX = "check the model and the document's text; it is retried next run"
_RETRY = "the document was not counted as stored: it is redone on the next run (or --retry-failed REPORT)"


def _token_batches(items: list[tuple[Work, int]], budget: int, max_count: int | None = None,
                   max_waste: float = 1.0) -> list[list[tuple[Work, int]]]:  # fmt: skip
    """Cut length-sorted (ascending) chunks into batches whose padded size (count x longest) stays within
    ``budget``, of at most ``max_count`` chunks (the embedder's own batch size: one forward pass each), and
    whose padding stays under ``max_waste`` of the padded size (padding is computed like real tokens)."""
    out: list[list[tuple[Work, int]]] = []
    cur: list[tuple[Work, int]] = []
    longest = real = 0
    for w, i in items:
        t = max(1, w.chunks[i].token_count)
        if cur:
            n, top = len(cur) + 1, max(longest, t)
            if n * top > budget or (max_count and n > max_count) or (n * top - real - t) > max_waste * n * top:
                out.append(cur)
                cur, longest, real = [], 0, 0
        cur.append((w, i))
        longest = max(longest, t)
        real += t
    if cur:
        out.append(cur)
    return out


#: largest share of padding in an embedding batch: the forward pass computes padded positions like real
#: tokens, so a batch that mixes a 60-token chunk with a 500-token one pays for 440 tokens of nothing
PAD_WASTE = 0.15


def embed_works(embedder: Embedder, works: Sequence[Work], token_budget: int,
                max_waste: float | None = None) -> tuple[int, int, dict[int, str]]:  # fmt: skip
    """Embed the chunks of ``works`` not reusing stored vectors, in batches of length-sorted chunks cut by
    the token budget, the embedder's batch size and the padding share. Returns (tokens embedded, padded
    tokens computed, {id(work): error} for the documents whose embedding failed: a failed batch is
    retried document by document, so one bad document fails alone)."""
    todo = [(w, i) for w in works if not w.reused for i in range(len(w.chunks))]
    for w in works:
        if not w.reused:
            w.vectors = [None] * len(w.chunks)
    todo.sort(key=lambda wi: wi[0].chunks[wi[1]].token_count)
    broken: dict[int, str] = {}
    tokens = padded = 0
    size = getattr(embedder, "batch_size", None)
    waste = PAD_WASTE if max_waste is None else max_waste
    for batch in _token_batches(todo, token_budget, size if isinstance(size, int) else None, waste):
        alive = [(w, i) for w, i in batch if id(w) not in broken]
        if not alive:
            continue
        try:
            vecs = embedder.embed_passages([w.passages[i] for w, i in alive])
        except Exception as exc:  # isolate the bad document: retry document by document
            log.info("embedding batch failed (%s); retrying document by document", exc)
            for w in {id(w): w for w, _ in alive}.values():
                mine = [(ww, i) for ww, i in alive if ww is w]
                try:
                    v = embedder.embed_passages([w.passages[i] for _, i in mine])
                except Exception as exc2:
                    broken[id(w)] = f"embedding failed: {type(exc2).__name__}: {exc2}"
                    continue
                for (_, i), row in zip(mine, v, strict=True):
                    w.vectors[i] = row
            continue
        for (w, i), row in zip(alive, vecs, strict=True):
            w.vectors[i] = row
        tokens += sum(w.chunks[i].token_count for w, i in alive)
        padded += len(alive) * max(w.chunks[i].token_count for w, i in alive)
    return tokens, padded, broken
