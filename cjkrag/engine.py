"""The Engine: the one front for ingestion and search (CLI, HTTP service and plugins build on it).

``Engine(config)`` is light; models and the store load on first use or with :meth:`warm_up`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cjkrag.config import Config, load_config
from cjkrag.errors import AccessError, ConfigError, InputError
from cjkrag.types import Document, Hit

if TYPE_CHECKING:
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.connectors.protocol import VectorStore
    from cjkrag.ingest.embedding.protocol import Embedder
    from cjkrag.ingest.job import IngestReport, Origin
    from cjkrag.ingest.manifest import Manifest
    from cjkrag.pipeline.analyzer import CJKAnalyzer
    from cjkrag.pipeline.rerank import Reranker
    from cjkrag.pipeline.search import SearchPipeline
    from cjkrag.service.batching import MicroBatcher

log = logging.getLogger("cjkrag")

Source = str | Path | Mapping[str, Any] | Document
_SOURCE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Engine:
    """Ingest documents and search them, with access control, over the configured store."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._embedder: Embedder | None = None
        self._store: VectorStore | None = None
        self._analyzer: CJKAnalyzer | None = None
        self._reranker: Reranker | None = None
        self._reranker_loaded = False
        self._pipeline: SearchPipeline | None = None
        self._manifest: Manifest | None = None

    # -- components (lazy, loaded once, thread-safe) ----------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                from cjkrag.ingest.embedding.loader import load_embedder

                e = self.config.embedding
                emb = load_embedder(
                    e.model,
                    device=e.device,
                    batch_size=e.batch_size,
                    profile=e.profile,
                    precision=e.precision,
                    backend=e.backend,
                )
                if hasattr(emb, "query_threads"):
                    emb.query_threads = e.query_threads or max(1, _cores() // 2)
                if hasattr(emb, "trace_queries"):
                    emb.trace_queries = e.trace_queries
                emb.warm_up()
                self._embedder = emb
            return self._embedder

    @property
    def store(self) -> VectorStore:
        with self._lock:
            if self._store is None:
                from cjkrag.connectors.registry import open_store

                store = open_store(self.config)  # the backend named by store.backend; warm_up() done
                self._store = store
            return self._store

    @property
    def manifest(self) -> Manifest:
        """The collection's ingestion manifest (what is stored per document; see ingest/manifest.py)."""
        with self._lock:
            if self._manifest is None:
                import hashlib
                import json

                from cjkrag.ingest.manifest import Manifest, manifest_path

                store = self.config.store
                if store.backend == "milvus":
                    uri = self.config.milvus_uri()
                    server = "://" in uri
                    backend = f"milvus-{hashlib.sha1(uri.encode()).hexdigest()[:10]}" if server else "milvus"
                    store_file = None if server else uri
                else:  # one manifest per backend and location: switching backend never reuses another's
                    settings = dict(store.model_dump(mode="json").get(store.backend) or {})
                    location = {k: v for k, v in settings.items() if not k.endswith("_env")}  # not the key's name
                    where = json.dumps([store.backend, location, store.options], sort_keys=True, default=str)
                    backend = f"{store.backend}-{hashlib.sha1(where.encode()).hexdigest()[:10]}"
                    store_file = None
                path = manifest_path(store_file, self.config.resolved_data_dir(), backend,
                                     self.config.collection)  # fmt: skip
                self._manifest = Manifest(path)
            return self._manifest

    @property
    def analyzer(self) -> CJKAnalyzer:
        with self._lock:
            if self._analyzer is None:
                from cjkrag.pipeline.analyzer import CJKAnalyzer

                a = self.config.analyzer
                analyzer = CJKAnalyzer(
                    bigrams=a.bigrams,
                    traditional_to_simplified=a.traditional_to_simplified,
                    stopwords=a.stopwords,
                )
                analyzer.warm_up()
                self._analyzer = analyzer
            return self._analyzer

    @property
    def reranker(self) -> Reranker | None:
        with self._lock:
            if not self._reranker_loaded:
                from cjkrag.pipeline.rerank import load_reranker

                r = self.config.rerank
                reranker = load_reranker(
                    r.model,
                    device=self.config.embedding.device,
                    batch_size=r.batch_size,
                    max_length=r.max_length,
                )
                if reranker is not None:
                    reranker.warm_up()
                self._reranker = reranker
                self._reranker_loaded = True
            return self._reranker

    @property
    def pipeline(self) -> SearchPipeline:
        if self._pipeline is None:
            from cjkrag.pipeline.query_cache import QueryEmbeddingCache
            from cjkrag.pipeline.search import SearchPipeline

            r = self.config.retrieval
            self._pipeline = SearchPipeline(
                store=self.store,
                embedder=self.embedder,
                analyzer=self.analyzer,
                retrieval=r,
                reranker=self.reranker,
                rerank_top_n=self.config.rerank.top_n,
                query_cache=QueryEmbeddingCache(r.query_cache_size) if r.query_cache_size else None,
                concurrent=r.concurrent,
            )
        return self._pipeline

    def enable_query_batching(self, *, max_batch: int = 32, max_wait_ms: float = 2.0,
                              max_queue: int = 256) -> MicroBatcher[str]:  # fmt: skip
        """Embed the queries of concurrent ``search`` calls together, in micro-batches (the HTTP service).

        Only model work is shared (query embeddings; with a reranker, reranks too): each call's access
        filter, store searches and post-check stay its own. Vectors are those of unbatched calls up to float rounding (padding in a batch changes the
        summation order; the length-sorted batches keep padding small); the cache still comes first.
        """
        from cjkrag.service.batching import MicroBatcher

        pipeline = self.pipeline
        batcher: MicroBatcher[str] = MicroBatcher(
            self.embedder.embed_queries, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
            name="query-embedding",
        )  # fmt: skip
        pipeline.embed_queries = batcher.submit
        score_many = getattr(pipeline.reranker, "score_many", None)
        if score_many is not None:  # reranks too: every request's (query, candidates) in one model pass
            reranks: MicroBatcher[tuple[str, list[str]]] = MicroBatcher(
                score_many, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, name="rerank"
            )
            pipeline.rerank_scores = reranks.submit
            batcher.companions.append(reranks)
        return batcher

    def warm_up(self) -> None:
        """Load models and connect to the store now (the service calls this once at start)."""
        _ = self.pipeline
        queries = getattr(self.embedder, "warm_up_queries", None)
        if queries is not None:
            queries()  # the traced query path (CPU), built once here rather than on a first query
        self.store.ensure_collection(self.embedder.dim)

    def ready(self) -> dict[str, Any]:
        """Store reachable and models loaded; raises StoreUnavailable when the store is down."""
        count = self.store.count()
        return {
            "store": "ok",
            "chunks": count,
            "embedding": self.embedder.name,
            "collection": self.config.collection,
        }

    # -- ingestion -----------------------------------------------------------------------------------
    def ingest(
        self,
        sources: Source | Iterable[Source],
        *,
        acl: Sequence[str] = (),
        deny: Sequence[str] = (),
        public: bool = False,
        on_progress: Callable[..., None] | None = None,
        source_id: str | None = None,
        sync: bool = False,
        dry_run: bool = False,
        yes: bool = False,
        only_sources: Collection[str] | None = None,
        encoding: str | None = None,
        engine: str | None = None,
        ray_address: str | None = None,
    ) -> IngestReport:
        """Ingest files/folders (paths), records (dicts with id, text, title, acl, public, metadata), cjkrag
        Documents and LangChain / LlamaIndex documents (``pipeline/integrations``).

        ``acl``/``deny``/``public`` apply to documents that do not carry their own access rule.
        ``encoding`` forces the encoding of text files instead of detecting it.
        ``source_id`` namespaces the ids of files (``NAME:relative/path``). ``sync`` deletes the documents
        of the folders given that are gone (refusing more than ``ingest.sync_max_delete_share`` of the
        collection unless ``yes``); ``dry_run`` writes and deletes nothing and lists what would change.
        ``only_sources``: ingest only documents read from these files (``--retry-failed``).
        ``engine``: ``local`` or ``ray`` (default ``ingest.engine``); ``ray_address`` overrides
        ``ingest.ray.address``.
        ``on_progress(docs, chunks)`` gets increments (or, with keyword parameters
        ``docs, chunks, tokens, failed``, all counters).
        """
        import inspect

        from cjkrag.connectors.filters import validate_principal
        from cjkrag.ingest.job import IngestJob, Progress
        from cjkrag.ingest.manifest import Versions

        try:
            acl = tuple(validate_principal(p) for p in acl)
            deny = tuple(validate_principal(p) for p in deny)
        except ValueError as exc:
            raise AccessError(f"--acl/--deny: {exc}") from None
        if source_id is not None and not _SOURCE_ID.match(source_id):
            raise InputError(f"--source-id {source_id!r}: use 1-64 letters, digits, '_', '-' or '.'")
        roots: list[str] = []
        ray = self._ray_options(engine or self.config.ingest.engine, ray_address)
        reader: Callable[..., Iterator[Any]] | None = None
        if ray is not None and not dry_run:  # files are read by Ray tasks (started by the job's Ray stages)
            from cjkrag.ingest.ray_engine import iter_documents_ray

            reader = iter_documents_ray
        items = self._documents(
            sources, acl=acl, deny=deny, public=public, source_id=source_id, roots=roots, encoding=encoding,
            reader=reader,
        )
        if only_sources is not None:
            wanted = set(only_sources)
            items = (it for it in items if str(getattr(it[1], "source", "")).rsplit(":", 1)[0] in wanted
                     or str(getattr(it[1], "source", "")) in wanted)  # fmt: skip
        e, c = self.config.embedding, self.config.chunking
        max_tokens = min(c.max_tokens, self.embedder.max_tokens)
        rich = on_progress is not None and "tokens" in inspect.signature(on_progress).parameters
        job = IngestJob(
            store=self.store,
            embedder=self.embedder,
            analyzer=self.analyzer,
            manifest=self.manifest,
            max_tokens=max_tokens,
            overlap_tokens=c.overlap_tokens,
            batch_size=self.config.ingest.batch_size,
            versions=Versions(
                # another runtime computes (slightly) other vectors: re-embed rather than mix them
                model=f"{e.model}|{e.profile}" + ("" if e.backend == "torch" else f"|{e.backend}"),
                chunker=f"{max_tokens}|{c.overlap_tokens}" + ("|ctx" if c.context_embedding else ""),
                analyzer=self.analyzer_tag(),
            ),
            context_keywords=c.context_keywords,
            context_embedding=c.context_embedding,
            progress=Progress(on_progress, rich=rich),
            sync=sync,
            dry_run=dry_run,
            yes=yes,
            max_delete_share=self.config.ingest.sync_max_delete_share,
            ray=ray,
            prep_workers=self.config.ingest.workers if ray is None else 0,
            worker_config=self._worker_config(),
        )
        report = job.run(items, roots=roots)
        report.run = {"roots": roots, "source_id": source_id or "", "acl": list(acl), "deny": list(deny),
                      "public": public, "sync": sync}  # fmt: skip
        log.info("ingest: %s", report.summary())
        return report

    def _worker_config(self) -> dict[str, Any]:
        """What worker processes / Ray actors need to build the same models (no store credentials)."""
        return self.config.model_dump(mode="json", include={"embedding", "chunking", "analyzer"})

    def _ray_options(self, engine: str, address: str | None) -> Any:
        if engine == "local":
            if address:
                raise ConfigError("--ray-address is for --engine ray")
            return None
        if engine != "ray":
            raise ConfigError(f"--engine {engine!r}: use local or ray")
        from cjkrag.ingest.ray_engine import RayOptions

        r = self.config.ingest.ray
        return RayOptions(
            config=self._worker_config(),
            address=address or r.address,
            actors=r.actors,
            cpus_per_actor=r.cpus_per_actor,
            gpus_per_actor=r.gpus_per_actor,
            in_flight_per_actor=r.in_flight_per_actor,
            batch_docs=r.batch_docs,
        )

    def analyzer_tag(self) -> str:
        return self.config.analyzer_tag()

    def _documents(
        self,
        sources: Source | Iterable[Source],
        *,
        acl: tuple[str, ...],
        deny: tuple[str, ...],
        public: bool,
        source_id: str | None = None,
        roots: list[str] | None = None,
        encoding: str | None = None,
        reader: Callable[..., Iterator[Any]] | None = None,
    ) -> Iterator[tuple[Origin, Any]]:
        """(origin, document or read failure) for every source; ``roots`` collects the paths given."""
        from cjkrag.ingest.job import Origin
        from cjkrag.ingest.readers import iter_documents, iter_records
        from cjkrag.pipeline.integrations import framework_record

        if isinstance(sources, (str, Path, Mapping, Document)):
            sources = [sources]
        paths: list[str | Path] = []
        records: list[Mapping[str, Any]] = []
        docs: list[Document] = []
        for s in sources:
            if isinstance(s, (str, Path)):
                paths.append(s)
            elif isinstance(s, Document):
                docs.append(s)
            elif isinstance(s, Mapping):
                records.append(s)
            elif (record := framework_record(s)) is not None:  # a LangChain / LlamaIndex document
                records.append(record)
            else:
                raise ConfigError(
                    f"cannot ingest a {type(s).__name__}: pass paths, record dicts or Documents "
                    "(cjkrag, LangChain or LlamaIndex)"
                )
        for p in paths:
            root = str(Path(p).expanduser().resolve())
            if roots is not None:
                roots.append(root)
            origin = Origin(root, source_id or "")
            for item in (reader or iter_documents)(
                [p],
                default_acl=acl,
                default_deny=deny,
                default_public=public,
                max_bytes=self.config.ingest.max_file_bytes,
                source_id=source_id,
                encoding=encoding,
            ):
                yield origin, item
        plain = Origin()
        if records:
            for item in iter_records(records, default_acl=acl, default_deny=deny, default_public=public):
                yield plain, item
        for d in docs:
            yield plain, d

    # -- search --------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        principals: Sequence[str],
        narrow_to: Sequence[str] | None = None,
        top_k: int | None = None,
        mode: str | None = None,
        rerank: bool | None = None,
        filters: Mapping[str, Any] | FilterNode | None = None,
        language: str | None = None,
    ) -> list[Hit]:
        """The best chunks the ``principals`` may read. ``principals`` is required: no default identity.

        ``principals`` must be ALL the principals the caller holds. ``narrow_to`` (optional) searches as a
        subset of them: it restricts only which principals grant access; ``deny`` is always checked against
        every held principal, so narrowing can hide chunks but never reveal one.
        """
        for name, value in (("principals", principals), ("narrow_to", narrow_to)):
            if isinstance(value, str):
                raise AccessError(f"{name} must be a list of strings such as ['group:sales'], not one string")
        return self.pipeline.search(
            query,
            principals=list(principals),
            narrow_to=None if narrow_to is None else list(narrow_to),
            top_k=top_k or self.config.retrieval.top_k,
            mode=mode or self.config.retrieval.mode,
            rerank=rerank,
            filters=filters,
            language=language,
        )

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        """Delete documents by id (all their chunks, and their manifest entries); returns how many were known.

        ``doc_ids`` must be a list: one bare string is refused (``"ab"`` would otherwise mean ``a`` and ``b``).
        """
        from cjkrag.ingest.job import delete_documents

        if isinstance(doc_ids, (str, bytes)):
            raise InputError(f"delete_documents takes a list of ids, not one string: use [{doc_ids!r}]")
        ids = [str(i) for i in doc_ids]
        known = len(self.manifest.get_many(ids))
        delete_documents(self.store, self.manifest, ids)
        return known

    def documents_from(self, source: str | Path) -> list[str]:
        """Ids of the stored documents read from a file, or from under a folder (as given to ingest)."""
        path = str(Path(source).expanduser().resolve())
        return sorted(e.doc_id for e in self.manifest.by_source(path))

    def drop(self) -> None:
        """Remove the collection and its manifest (everything ingested into it)."""
        self.store.drop_collection()
        self.manifest.clear()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def open_engine(config: str | Path | Mapping[str, Any] | Config | None = None) -> Engine:
    return Engine(load_config(config))
