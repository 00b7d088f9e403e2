"""`cjkrag ingest --engine ray`: Ray actors chunk, analyze and embed; this process stays the single writer.

Ray tasks read the files (:func:`iter_documents_ray`: the local readers' walk, ids and failures, in the
same order); the driver (this process) looks documents up in the manifest (one batched lookup per 256
documents, exactly as the local engine) and sends the documents to re-do to a pool of Ray actors in
batches. Each actor holds the same embedder and analyzer the local engine builds from the same config (one
GPU per actor when the cluster has GPUs), runs the *same* code (``IngestJob.fill`` then
``stages.embed_works``: token-budget batches of length-sorted chunks) and returns the chunks, keywords and
vectors. The driver's writer thread then upserts, deletes stale chunks and commits the manifest LAST, with
the code of the local engine: crash safety, the manifest protocol and the results are those of
``--engine local``.

Backpressure: at most ``in_flight_per_actor`` batches per actor are submitted and not yet collected, and
the queues on each side are bounded (``IngestJob.queue_docs``), so memory stays flat on any corpus.

Ray is imported here only (``pip install 'cjkrag[ray]'``); ``import cjkrag`` never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cjkrag.errors import CjkragError, ConfigError
from cjkrag.ingest.stages import _END, _POLL_S, EMBED_FIX, Stages, embed_works

if TYPE_CHECKING:
    from cjkrag.ingest.job import IngestJob, Work
    from cjkrag.ingest.report import IngestReport

log = logging.getLogger("cjkrag.ingest")

_BATCH_CHARS = 200_000  # text per actor call, at most (and at most RayOptions.batch_docs documents)


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray (config ``ingest.ray``; ``--ray-address``)."""

    config: dict[str, Any] = field(default_factory=dict)  # the engine's config, for the actors to build the same models
    address: str | None = None  # None: $RAY_ADDRESS if set, else a local Ray started (and stopped) here
    actors: int = 0  # 0: one per GPU when the cluster has GPUs, else one per cpus_per_actor CPUs
    cpus_per_actor: float = 0  # 0: all CPUs of a local Ray for one actor; 4 on a cluster without GPUs
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    in_flight_per_actor: int = 2  # batches submitted to an actor and not yet collected (backpressure)
    batch_docs: int = 32  # documents per actor call


class PrepWorker:
    """A Ray actor (``ray.remote`` is applied at run time): chunk + analyze + embed batches of documents."""

    def __init__(self, config: dict[str, Any], job_cls: type[IngestJob], job_args: dict[str, Any]) -> None:
        from cjkrag.config import Config
        from cjkrag.engine import Engine

        engine = Engine(Config.model_validate(config))
        # no store and no manifest here: the driver is the only writer
        self.job = job_cls(store=None, embedder=engine.embedder, analyzer=engine.analyzer, **job_args)  # type: ignore[arg-type]

    def info(self) -> dict[str, Any]:
        import socket

        emb = self.job.embedder
        return {"model": emb.name, "dim": emb.dim, "host": socket.gethostname(), "pid": os.getpid(),
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}  # fmt: skip

    def run(self, works: list[Work], embed: list[bool]) -> tuple[list[Work], dict[int, tuple[str, str]], tuple[int, int], float, float]:
        """Fill and (where ``embed``) embed ``works``; returns them with {index: (error, fix)}, tokens, seconds."""
        from cjkrag.ingest.job import fill_works

        t0 = time.perf_counter()
        broken = fill_works(self.job, works)
        t1 = time.perf_counter()
        todo = [w for i, w in enumerate(works) if embed[i] and i not in broken and w.chunks]
        tokens, padded, failed = embed_works(self.job.embedder, todo, self.job.token_budget)
        for i, w in enumerate(works):
            if id(w) in failed:
                broken[i] = (failed[id(w)], EMBED_FIX)
        return works, broken, (tokens, padded), t1 - t0, time.perf_counter() - t1


class RayStages(Stages):
    """Stages whose embed thread dispatches to Ray actors; the write thread is the local engine's."""

    def __init__(self, job: IngestJob, report: IngestReport, options: RayOptions) -> None:
        self.options = options
        self._ray = _import_ray()
        self._started = self._connect()
        try:
            self.actors = self._start_actors(job)
        except BaseException:
            self._disconnect()
            raise
        self.load = [0] * len(self.actors)
        self.max_in_flight = max(1, options.in_flight_per_actor) * len(self.actors)
        report.stages.setdefault("chunk", 0.0)
        super().__init__(job, report)

    # -- Ray lifecycle ----------------------------------------------------------------------------------
    def _connect(self) -> bool:
        ray = self._ray
        if ray.is_initialized():
            return False
        address = self.options.address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        if address in (None, "local"):
            kwargs["include_dashboard"] = False
        try:
            ray.init(address=None if address == "local" else address, **kwargs)
        except Exception as exc:
            raise ConfigError(
                f"cannot start or reach Ray at {address or 'a local instance'}: {type(exc).__name__}: {exc}. "
                "Check --ray-address / ingest.ray.address / $RAY_ADDRESS (e.g. ray://head:10001 or auto)"
            ) from None
        return True

    def _disconnect(self) -> None:
        for a in getattr(self, "actors", []):
            with contextlib.suppress(Exception):
                self._ray.kill(a)
        if self._started:
            self._ray.shutdown()
            self._started = False

    def _start_actors(self, job: IngestJob) -> list[Any]:
        ray, o = self._ray, self.options
        res = ray.cluster_resources()
        gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 1))
        per_gpu = o.gpus_per_actor if o.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        per_cpu = o.cpus_per_actor or (max(1.0, cpus) if self._started else 4.0)
        if per_gpu:
            per_cpu = o.cpus_per_actor or 1.0
        n = o.actors or (int(gpus // per_gpu) if per_gpu else max(1, int(cpus // per_cpu)))
        if n < 1:
            raise ConfigError(f"Ray: no actor fits (cluster has {gpus:g} GPUs, {cpus:g} CPUs; "
                              f"each actor asks {per_gpu:g} GPU, {per_cpu:g} CPU): lower ingest.ray.*_per_actor")  # fmt: skip
        job_args = job.worker_args()
        cls = ray.remote(num_cpus=per_cpu, num_gpus=per_gpu, max_restarts=0)(PrepWorker)
        actors = [cls.remote(self.options.config, type(job), job_args) for _ in range(n)]
        infos = ray.get([a.info.remote() for a in actors])
        for info in infos:
            if (info["model"], info["dim"]) != (job.embedder.name, job.embedder.dim):
                raise ConfigError(
                    f"a Ray actor on {info['host']} loaded {info['model']} (dim {info['dim']}) but this process "
                    f"uses {job.embedder.name} (dim {job.embedder.dim}): give every node the same model files and config"
                )
        log.info("ray: %d actor(s), %g GPU and %g CPU each: %s", n, per_gpu, per_cpu, infos)
        return actors

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._disconnect()

    def abort(self) -> None:
        try:
            super().abort()
        finally:
            self._disconnect()

    # -- the dispatch thread (replaces the local embed thread) ------------------------------------------
    def _embed_loop(self) -> None:
        inflight: dict[Any, tuple[int, list[Work]]] = {}
        ended = False
        while not ended or inflight:
            while not ended and len(inflight) < self.max_in_flight:
                item = self._get(self.q_embed, block=not inflight)
                if item is None:
                    break
                if item is _END:
                    ended = True
                    break
                batch, ended = self._gather_docs(self.q_embed, item, self.options.batch_docs, _BATCH_CHARS)
                self._submit(batch, inflight)
            if self.stop.is_set():
                return
            if inflight:
                ready, _ = self._ray.wait(list(inflight), num_returns=1, timeout=_POLL_S)
                for ref in ready:
                    self._collect(ref, inflight)
        self._put(self.q_write, _END)

    def _submit(self, works: list[Work], inflight: dict[Any, tuple[int, list[Work]]],
                embed: Sequence[bool] | None = None) -> None:  # fmt: skip
        if embed is None:  # an access/analyzer-only change reads its vectors back instead (on collection)
            embed = [not self.job.vectors_reusable(w) for w in works]
        k = min(range(len(self.actors)), key=self.load.__getitem__)
        self.load[k] += 1
        inflight[self.actors[k].run.remote(works, list(embed))] = (k, works)

    def _collect(self, ref: Any, inflight: dict[Any, tuple[int, list[Work]]]) -> None:
        k, _sent = inflight.pop(ref)
        self.load[k] -= 1
        try:
            works, broken, (tokens, padded), chunk_s, embed_s = self._ray.get(ref)
        except Exception as exc:  # an actor died (node lost, OOM): stop; a rerun redoes what is not committed
            raise CjkragError(f"a Ray actor failed ({type(exc).__name__}: {exc}); nothing it held was written: "
                              "re-run the same command to finish") from None  # fmt: skip
        self.report.stages["chunk"] += chunk_s
        self.report.stages["embed"] += embed_s
        self.report.tokens += tokens
        self.report.padded_tokens += padded
        self.job.progress_update(tokens=tokens)
        again: list[Work] = []
        for i, w in enumerate(works):
            if i in broken:
                self._fail(w, *broken[i])
                continue
            with self.lock:
                ready = self.job.finish_plan(w, self.report)  # no text: reported; reusable: vectors read back
            if ready is None:
                continue
            if len(ready.vectors) != len(ready.chunks):  # the stored vectors could not be read back: embed
                again.append(ready)
                continue
            self._put(self.q_write, ready)
        if again:
            self._submit(again, inflight, embed=[True] * len(again))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray: pip install 'cjkrag[ray]' (or pip install ray), or use --engine local"
        ) from None
    return ray


def _read_remote(ctx: Any, defaults: Any) -> list[Any]:
    """A Ray task: one file's documents (or read failures); the driver streams .jsonl files itself."""
    from cjkrag.ingest.readers import _read_file

    return list(_read_file(ctx, defaults))


def iter_documents_ray(
    paths: Sequence[str | Path],
    *,
    default_acl: Sequence[str] = (),
    default_deny: Sequence[str] = (),
    default_public: bool = False,
    max_bytes: int,
    source_id: str | None = None,
    encoding: str | None = None,
    window: int = 0,
) -> Iterator[Any]:
    """``readers.iter_documents`` with each file read by a Ray task: same walk (sorted), ids, failures and
    duplicate-id rule, results yielded in the same order; at most ``window`` files in flight (0: 2 per CPU).
    ``.jsonl`` files are streamed here (one file can hold millions of records). Call with Ray initialized."""
    import codecs
    from collections import deque

    from cjkrag.errors import InputError
    from cjkrag.ingest.readers import SUPPORTED_EXTENSIONS, _context, _dedup, _doc_id, _read_file, _walk
    from cjkrag.ingest.readers.base import ReadFailure
    from cjkrag.ingest.readers.jsonl import make_defaults

    ray = _import_ray()
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise InputError(f"--encoding {encoding!r} is not a known encoding: use e.g. gb18030, big5, cp932") from None
    defaults = make_defaults(default_acl, default_deny, default_public)
    window = window or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    # num_cpus=0: the actors may hold every CPU of the cluster (a local Ray gives its one actor all of them);
    # a read task that waited for a CPU would then never run. Concurrency is bounded by the window instead.
    task = ray.remote(num_cpus=0)(_read_remote)
    seen: dict[str, str] = {}
    pending: deque[Any] = deque()

    def drain(keep: int) -> Iterator[Any]:
        while len(pending) > keep:
            yield from _dedup(iter(ray.get(pending.popleft())), seen)

    def one(path: Path, rel: str) -> Iterator[Any]:
        ctx = _context(path, _doc_id(path, rel, source_id), defaults, max_bytes, encoding, True)
        if path.suffix.lower() == ".jsonl":
            yield from drain(0)
            yield from _dedup(_read_file(ctx, defaults), seen)
        else:
            pending.append(task.remote(ctx, defaults))
            yield from drain(window)

    for given in paths:
        root = Path(given)
        if not root.exists():
            yield from drain(0)
            yield ReadFailure(str(given), "path does not exist", "check the path (relative to the working directory)")
        elif root.is_dir():
            for rel, path in _walk(root):
                if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                    yield from drain(0)
                    yield ReadFailure(str(path), f"unsupported extension {path.suffix or '(none)'!r}",
                                      f"supported: {', '.join(SUPPORTED_EXTENSIONS)}", kind="skipped")  # fmt: skip
                    continue
                yield from one(path, rel)
        elif root.suffix.lower() not in SUPPORTED_EXTENSIONS:
            yield from drain(0)
            yield ReadFailure(str(root), f"unsupported extension {root.suffix or '(none)'!r}",
                              f"convert it to one of {', '.join(SUPPORTED_EXTENSIONS)}")  # fmt: skip
        else:
            yield from one(root, root.name)
    yield from drain(0)
