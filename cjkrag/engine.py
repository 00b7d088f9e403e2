"""The Engine: the one front for ingestion and search (CLI, HTTP service and plugins build on it).

``Engine(config)`` is light; models and the store load on first use or with :meth:`warm_up`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cjkrag.config import Config, load_config
from cjkrag.errors import AccessError, ConfigError
from cjkrag.types import Document, Hit

if TYPE_CHECKING:
    from cjkrag.connectors.filters import FilterNode
    from cjkrag.connectors.protocol import VectorStore
    from cjkrag.ingest.embedding.protocol import Embedder
    from cjkrag.ingest.job import IngestReport
    from cjkrag.pipeline.analyzer import CJKAnalyzer
    from cjkrag.pipeline.rerank import Reranker
    from cjkrag.pipeline.search import SearchPipeline

log = logging.getLogger("cjkrag")

Source = str | Path | Mapping[str, Any] | Document


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
                )
                emb.warm_up()
                self._embedder = emb
            return self._embedder

    @property
    def store(self) -> VectorStore:
        with self._lock:
            if self._store is None:
                from cjkrag.connectors.milvus.store import MilvusStore

                uri = self.config.milvus_uri()
                if "://" not in uri:
                    Path(uri).parent.mkdir(parents=True, exist_ok=True)
                store = MilvusStore(uri, self.config.collection, token=self.config.store.milvus.token)
                store.warm_up()
                self._store = store
            return self._store

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
            from cjkrag.pipeline.search import SearchPipeline

            self._pipeline = SearchPipeline(
                store=self.store,
                embedder=self.embedder,
                analyzer=self.analyzer,
                retrieval=self.config.retrieval,
                reranker=self.reranker,
                rerank_top_n=self.config.rerank.top_n,
            )
        return self._pipeline

    def warm_up(self) -> None:
        """Load models and connect to the store now (the service calls this once at start)."""
        _ = self.pipeline
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
        on_progress: Callable[[int, int], None] | None = None,
    ) -> IngestReport:
        """Ingest files/folders (paths) and/or records (dicts with id, text, title, acl, public, metadata).

        ``acl``/``deny``/``public`` apply to documents that do not carry their own access rule.
        """
        from cjkrag.connectors.filters import validate_principal
        from cjkrag.ingest.job import IngestJob

        try:
            acl = tuple(validate_principal(p) for p in acl)
            deny = tuple(validate_principal(p) for p in deny)
        except ValueError as exc:
            raise AccessError(f"--acl/--deny: {exc}") from None
        items = self._documents(sources, acl=acl, deny=deny, public=public)
        e, c = self.config.embedding, self.config.chunking
        job = IngestJob(
            store=self.store,
            embedder=self.embedder,
            analyzer=self.analyzer,
            max_tokens=min(c.max_tokens, self.embedder.max_tokens),
            overlap_tokens=c.overlap_tokens,
            batch_size=self.config.ingest.batch_size,
            settings_tag=f"{e.model}|{c.max_tokens}|{c.overlap_tokens}|{self.analyzer_tag()}",
            on_progress=on_progress,
        )
        report = job.run(items)
        log.info("ingest: %s", report.summary())
        return report

    def analyzer_tag(self) -> str:
        a = self.config.analyzer
        return f"bigrams={a.bigrams},t2s={a.traditional_to_simplified},stop={a.stopwords},kw=title+body"

    def _documents(
        self, sources: Source | Iterable[Source], *, acl: tuple[str, ...], deny: tuple[str, ...], public: bool
    ) -> Iterable[Any]:
        from cjkrag.ingest.readers import iter_documents, iter_records

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
            else:
                raise ConfigError(
                    f"cannot ingest a {type(s).__name__}: pass paths, record dicts or Documents"
                )
        if paths:
            yield from iter_documents(
                paths,
                default_acl=acl,
                default_deny=deny,
                default_public=public,
                max_bytes=self.config.ingest.max_file_bytes,
            )
        if records:
            yield from iter_records(records, default_acl=acl, default_deny=deny, default_public=public)
        yield from docs

    # -- search --------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        principals: Sequence[str],
        top_k: int | None = None,
        mode: str | None = None,
        rerank: bool | None = None,
        filters: Mapping[str, Any] | FilterNode | None = None,
        language: str | None = None,
    ) -> list[Hit]:
        """The best chunks the ``principals`` may read. ``principals`` is required: no default identity."""
        if isinstance(principals, str):
            raise AccessError("principals must be a list of strings such as ['group:sales'], not one string")
        return self.pipeline.search(
            query,
            principals=list(principals),
            top_k=top_k or self.config.retrieval.top_k,
            mode=mode or self.config.retrieval.mode,
            rerank=rerank,
            filters=filters,
            language=language,
        )

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        from cjkrag.connectors.filters import Condition

        self.store.delete(filters=Condition("doc_id", "in", list(doc_ids)))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_engine(config: str | Path | Mapping[str, Any] | Config | None = None) -> Engine:
    return Engine(load_config(config))
