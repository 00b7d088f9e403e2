"""The query pipeline: ACL pre-filter -> dense + keyword retrieval -> fusion -> rerank -> post-check.

Access control is not optional here: every call needs the caller's principals, the ACL clause is ANDed
into the filter that each store query carries (pre-filter: results are the best *visible* chunks), and a
defensive post-check with the reference evaluator drops (and logs) anything that slipped through.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cjkrag.connectors.filters import FilterNode, acl_filter, and_, evaluate, parse_filter
from cjkrag.errors import ConfigError
from cjkrag.types import Hit, StoredHit

if TYPE_CHECKING:
    import numpy as np

    from cjkrag.config import RetrievalConfig
    from cjkrag.connectors.protocol import VectorStore
    from cjkrag.ingest.embedding.protocol import Embedder
    from cjkrag.pipeline.analyzer import CJKAnalyzer
    from cjkrag.pipeline.query_cache import QueryEmbeddingCache
    from cjkrag.pipeline.rerank import Reranker

log = logging.getLogger("cjkrag.search")

_drops_lock = threading.Lock()
_post_check_drops = 0


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _workers() -> ThreadPoolExecutor:
    """The process-wide pool for the keyword side of hybrid searches (bounded: queued when all are busy).

    Its tasks never wait on anything but the store, so a full pool only delays, never deadlocks."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1)),
                                       thread_name_prefix="cjkrag-keyword")  # fmt: skip
        return _pool


def post_check_drops() -> int:
    """How many chunks the defensive post-check has dropped in this process (any > 0 is a store bug)."""
    return _post_check_drops

Mode = Literal["hybrid", "dense", "keyword"]
MODES: tuple[str, ...] = ("hybrid", "dense", "keyword")


@dataclass
class SearchPipeline:
    store: VectorStore
    embedder: Embedder
    analyzer: CJKAnalyzer
    retrieval: RetrievalConfig
    reranker: Reranker | None = None
    rerank_top_n: int = 50
    #: LRU of query vectors (``retrieval.query_cache_size``); None: every query is embedded
    query_cache: QueryEmbeddingCache | None = None
    #: hybrid: keyword side on a worker thread while the query is embedded (``retrieval.concurrent``)
    concurrent: bool = True
    #: replaces ``embedder.embed_queries`` (the HTTP service's micro-batcher); same vectors, batched
    embed_queries: Callable[[list[str]], np.ndarray] | None = None
    #: (query, passages) requests -> their rerank scores in one model pass (the service's rerank batcher)
    rerank_scores: Callable[[list[tuple[str, list[str]]]], Sequence[Sequence[float]]] | None = None
    #: stores with ``fetch`` (Milvus): search for ids and scores only, fetch the fields of the hits kept
    late_fetch: bool = True

    def search(
        self,
        query: str,
        *,
        principals: Sequence[str],
        narrow_to: Sequence[str] | None = None,
        top_k: int = 10,
        mode: str = "hybrid",
        rerank: bool | None = None,
        filters: Mapping[str, Any] | FilterNode | None = None,
        language: str | None = None,
    ) -> list[Hit]:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, not {top_k}")
        # ALL held principals go to acl_filter: narrowing shrinks only the allow side, deny sees every one
        access = acl_filter(principals, narrow_to=narrow_to)
        combined = and_(access, parse_filter(filters))
        use_rerank = self.reranker is not None if rerank is None else rerank
        if use_rerank and self.reranker is None:
            raise ConfigError("rerank was asked for but no reranker is configured: set rerank.model in the config")
        # candidates are per retriever, for fusion/rerank: one retriever without rerank is ranked as the
        # store ranks it, so its top_k are the answer (exact indexes: the same top_k as from a deeper list)
        single = mode != "hybrid" and not use_rerank
        depth = top_k if single else max(top_k, self.retrieval.candidates, self.rerank_top_n if use_rerank else 0)

        late = callable(getattr(self.store, "fetch", None)) and self.late_fetch
        runs, flt = self._retrieve(query, mode, depth, combined, language, late)
        by_id: dict[str, StoredHit] = {}
        for run in runs.values():
            for stored in run:
                by_id.setdefault(stored.chunk_id, stored)
        ranked: list[Any] = self._fuse(runs, by_id, query, language)  # entries; Hits built when needed
        done: set[str] = set()
        if use_rerank and self.reranker is not None and ranked:
            head = ranked[: self.rerank_top_n]  # the cross-encoder reads the texts of the head it reranks
            ranked = self._rerank(query, self._hits(head, by_id, flt, done, late)) + ranked[self.rerank_top_n :]
        visible: list[Hit] = []
        start = 0
        while len(visible) < top_k and start < len(ranked):
            # post-check what is returned (in order, until top_k): each is checked; with a late fetch the
            # fields come from a second store query (same filter, access included), for these hits only
            batch = ranked[start : start + top_k - len(visible)]
            start += len(batch)
            for h in self._hits(batch, by_id, flt, done, late):
                if self._visible(access, by_id[h.chunk_id]):
                    visible.append(h)
        return visible

    @staticmethod
    def _materialize(entry: Any, by_id: dict[str, StoredHit]) -> Hit:
        """The Hit of a :meth:`_fuse` entry (a Hit already, or ``(id, score, run name or fused item, rank)``)."""
        if isinstance(entry, Hit):
            return entry
        cid, score, source, rank = entry
        if isinstance(source, str):  # a single retriever's hit
            return _hit(by_id[cid], score, {source: score}, {source: rank})
        return _hit(by_id[cid], score, {**source.scores, "fused": score}, {**source.ranks, "fused": rank})

    def _hits(self, entries: list[Any], by_id: dict[str, StoredHit], flt: Any, done: set[str], late: bool) -> list[Hit]:
        """The Hits of ``entries``, each built once. With ``late``, the stored fields of those not fetched yet
        (``done``: the ids fetched already) are fetched first, in one store query; those the store no longer
        returns under the query's filter (deleted since the search) are left out."""
        if not late:
            return [self._materialize(e, by_id) for e in entries]
        ids = [e.chunk_id if isinstance(e, Hit) else e[0] for e in entries]
        missing = [cid for cid in ids if cid not in done]
        if missing:
            fetched = self.store.fetch(missing, flt)  # type: ignore[attr-defined]
            for cid in missing:
                fields = fetched.get(cid)
                if fields is not None:
                    by_id[cid].fields.update(fields)
                    done.add(cid)
        out = []
        for cid, e in zip(ids, entries, strict=True):
            if cid in done:  # a Hit entry is a reranked head hit, built after its fetch
                out.append(self._materialize(e, by_id))
            else:
                log.info("chunk %s left the store between search and fetch; skipped", cid)
        return out

    def query_vector(self, query: str) -> list[float]:
        """The query's embedding: from the LRU cache, else from ``embed_queries`` (the service's
        micro-batcher) or the embedder."""
        embed = self.embed_queries or self.embedder.embed_queries
        if self.query_cache is None:
            return [float(x) for x in embed([query])[0]]
        prefix = str(getattr(self.embedder, "query_prefix", ""))
        vector = self.query_cache.get_many(self.embedder.name, prefix, [query], embed)[0]
        return [float(x) for x in vector]

    def _retrieve(
        self, query: str, mode: str, depth: int, combined: FilterNode | None, language: str | None, late: bool
    ) -> tuple[dict[str, list[StoredHit]], Any]:
        """Dense and/or keyword candidates under ONE preparation of the filter (access clause included), and
        that prepared filter (the late fetch applies it again).

        With ``concurrent``, while this thread embeds the query a worker thread prepares the filter (on
        Milvus Lite: the access clause's deny resolution, two store round trips unless cached) and, in
        hybrid mode, runs the keyword side (analysis, BM25 search); the dense search then reuses the
        prepared filter. Same calls, same arguments as sequentially: only the overlap differs (the tests
        compare). With ``late``, the searches return ids and scores only (plus each keyword hit's language
        when fusion is adaptive): the fields of the hits kept are fetched afterwards.
        """
        store = self.store
        prepare = getattr(store, "prepare_filter", None)
        dense, keyword = mode in ("hybrid", "dense"), mode in ("hybrid", "keyword")
        lean: dict[str, Any] = {}
        lean_keyword: dict[str, Any] = {}
        if late:
            adaptive = mode == "hybrid" and self.retrieval.fusion.method == "adaptive"
            lean, lean_keyword = {"fields": ()}, {"fields": ("language",) if adaptive else ()}

        def keyword_run(flt: Any) -> list[StoredHit]:
            terms = self.analyzer.analyze_query(query, language)
            return store.search_keyword(terms, depth, flt, **lean_keyword) if terms else []

        if dense and self.concurrent and (keyword or prepare is not None):
            prepared: Future[Any] = Future()

            def side() -> list[StoredHit] | None:
                try:
                    flt = prepare(combined) if prepare is not None else combined
                except BaseException as exc:
                    prepared.set_exception(exc)
                    raise
                prepared.set_result(flt)
                return keyword_run(flt) if keyword else None

            worker = _workers().submit(side)
            try:
                vector = self.query_vector(query)
                flt = prepared.result()
                dense_run = store.search_dense(vector, depth, flt, **lean)
            finally:
                keyword_hits = worker.result()  # never leave the worker running past this call
            both = {"dense": dense_run}
            if keyword_hits is not None:
                both["keyword"] = keyword_hits
            return both, flt
        flt = prepare(combined) if prepare is not None else combined
        runs: dict[str, list[StoredHit]] = {}
        if dense:
            runs["dense"] = store.search_dense(self.query_vector(query), depth, flt, **lean)
        if keyword:
            runs["keyword"] = keyword_run(flt)
        return runs, flt

    def _fuse(
        self, runs: dict[str, list[StoredHit]], by_id: dict[str, StoredHit], query: str = "", language: str | None = None
    ) -> list[tuple[str, float, Any, int]]:
        """The fused ranking as ``(chunk id, score, run name or FusedItem, rank)`` entries: the Hits (with
        their score and rank per stage) are built by :meth:`_materialize` only for what is returned or
        reranked, not for every candidate (~200 per hybrid query)."""
        from cjkrag.pipeline.fusion import fuse

        ranked = {name: [(h.chunk_id, float(h.score)) for h in hits] for name, hits in runs.items()}
        fusion = self.retrieval.fusion
        if len(ranked) == 1:  # a single retriever: its own order and scores
            (name, run), = ranked.items()
            return [(cid, score, name, i + 1) for i, (cid, score) in enumerate(run)]
        weights = {k: float(v) for k, v in fusion.weights.items()}
        params: dict[str, Any] = {"weights": weights}
        if fusion.method == "rrf":
            params["k"] = fusion.k
        elif fusion.method == "weighted":
            params["normalization"] = fusion.normalization
        elif fusion.method == "adaptive":
            from cjkrag.pipeline.analyzer.normalize import detect_language, parse_language
            from cjkrag.pipeline.fusion import language_agreement

            lang = parse_language(language) or detect_language(query)
            hit_languages = [h.fields.get("language") for h in runs.get("keyword", [])]
            params.update(signals=tuple(fusion.signals), fill_at=fusion.fill_at,
                          evidence={"keyword": language_agreement(lang, hit_languages)})  # fmt: skip
        fused = fuse(ranked, fusion.method, **params)
        return [(item.id, item.score, item, i + 1) for i, item in enumerate(fused)]

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        assert self.reranker is not None
        if self.rerank_scores is None:
            reranked = self.reranker.rerank(query, hits, lambda h: h.text, self.rerank_top_n)
        else:  # the service's cross-request batcher: Reranker.rerank's contract, scores from the batch
            from cjkrag.pipeline.rerank import NO_SCORE

            head, tail = hits[: self.rerank_top_n], hits[self.rerank_top_n :]
            scores = list(self.rerank_scores([(query, [h.text for h in head])])[0])
            order = sorted(range(len(head)), key=lambda i: -scores[i])
            reranked = [(head[i], scores[i]) for i in order] + [(h, NO_SCORE) for h in tail]
        out = []
        for i, (hit, score) in enumerate(reranked):
            if i < min(self.rerank_top_n, len(hits)):
                hit.scores["rerank"] = float(score)
                hit.ranks["rerank"] = i + 1
                hit.score = float(score)
            out.append(hit)
        return out

    @staticmethod
    def _visible(access: FilterNode, stored: StoredHit) -> bool:
        """The defensive post-check (same access node as the pre-filter); a drop means the store leaked."""
        record = {k: stored.fields.get(k) for k in ("acl", "deny", "public", "tenant", "doc_id")}
        record["acl"] = list(record["acl"] or [])
        record["deny"] = list(record["deny"] or [])
        record["public"] = bool(record["public"])
        if evaluate(access, record):
            return True
        global _post_check_drops
        with _drops_lock:
            _post_check_drops += 1
        log.error(
            "access post-check dropped chunk %s of %s: the store returned a chunk the caller may not read",
            stored.chunk_id,
            stored.fields.get("doc_id"),
        )
        return False


def _hit(stored: StoredHit, score: float, scores: dict[str, float], ranks: dict[str, int]) -> Hit:
    f = stored.fields
    return Hit(
        doc_id=str(f.get("doc_id", "")),
        chunk_id=stored.chunk_id,
        text=str(f.get("text", "")),
        score=float(score),
        start=int(f.get("start") or 0),
        end=int(f.get("end") or 0),
        metadata=dict(f.get("metadata") or {}),
        title=str(f.get("title") or ""),
        scores=dict(scores),
        ranks=dict(ranks),
    )
