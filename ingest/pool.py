"""Worker processes for chunking and analysis (``ingest.workers: N``), so that CPU work leaves the process
that embeds (no GIL shared with the forward pass's Python side).

The reading thread decides what to redo (manifest lookup) and queues the documents; a dispatch thread
sends batches of them to a process pool (at most two batches per worker in flight: bounded) whose workers
run ``IngestJob.fill`` (the same code as the reading thread runs without workers), then hands the filled
documents to the embed thread. Writing and the manifest stay in this process, unchanged.

Off by default: on the 2-core machine this was measured on, the forward pass already uses both cores, and
the workers only competed with it (README "Ingestion throughput").
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from cjkrag.errors import ConfigError
from cjkrag.ingest.stages import _END, _POLL_S, Stages

if TYPE_CHECKING:
    from cjkrag.ingest.job import IngestJob, Work
    from cjkrag.ingest.report import IngestReport

_job: Any = None  # the worker process's job (set by _init)


def _init(config: dict[str, Any], job_cls: type[IngestJob], job_args: dict[str, Any]) -> None:
    from cjkrag.config import Config
    from cjkrag.engine import Engine

    config = {**config, "embedding": {**config.get("embedding", {}), "precision": "fp32"}}  # tokenizing only
    engine = Engine(Config.model_validate(config))
    global _job
    _job = job_cls(store=None, embedder=engine.embedder, analyzer=engine.analyzer, **job_args)  # type: ignore[arg-type]


def _fill(works: list[Work]) -> tuple[list[Work], dict[int, tuple[str, str]], float]:
    from cjkrag.ingest.job import fill_works

    t0 = time.perf_counter()
    broken = fill_works(_job, works)
    return works, broken, time.perf_counter() - t0


class PoolStages(Stages):
    def __init__(self, job: IngestJob, report: IngestReport) -> None:
        if not job.worker_config:
            raise ConfigError("ingest.workers needs the engine's config (run it through Engine.ingest)")
        args = job.worker_args()
        self.pool = cf.ProcessPoolExecutor(job.prep_workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_init, initargs=(job.worker_config, type(job), args))  # fmt: skip
        report.stages.setdefault("chunk", 0.0)
        self.q_prep: queue.Queue[Any] = queue.Queue(maxsize=job.queue_docs)
        super().__init__(job, report)
        t = threading.Thread(target=self._guarded, args=(self._prep_loop,), name="cjkrag-prep", daemon=True)
        self.threads.insert(0, t)
        t.start()

    def put(self, work: Work) -> None:
        self._put(self.q_prep, work)

    def finish(self) -> None:
        try:
            self._put(self.q_prep, _END)
            for t in self.threads:
                while t.is_alive():
                    t.join(_POLL_S)
            if self.error is not None:
                raise self.error
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def abort(self) -> None:
        try:
            super().abort()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _prep_loop(self) -> None:
        inflight: dict[cf.Future[Any], None] = {}
        limit = 2 * self.job.prep_workers
        ended = False
        while not ended or inflight:
            while not ended and len(inflight) < limit:
                item = self._get(self.q_prep, block=not inflight)
                if item is None:
                    break
                if item is _END:
                    ended = True
                    break
                batch, ended = self._gather_docs(self.q_prep, item, 16)
                inflight[self.pool.submit(_fill, batch)] = None
            if self.stop.is_set():
                return
            if inflight:
                done, _ = cf.wait(list(inflight), timeout=_POLL_S, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    del inflight[f]
                    works, broken, secs = f.result()
                    self.report.stages["chunk"] += secs
                    for i, w in enumerate(works):
                        if i in broken:
                            self._fail(w, *broken[i])
                            continue
                        with self.lock:
                            ready = self.job.finish_plan(w, self.report)
                        if ready is not None:
                            self._put(self.q_embed, ready)
        self._put(self.q_embed, _END)
