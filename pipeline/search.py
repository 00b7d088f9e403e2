"""The query pipeline: ACL pre-filter -> dense + keyword retrieval -> fusion -> rerank -> post-check.

Access control is not optional here: every call needs the caller's principals, the ACL clause is ANDed
into the filter that each store query carries (pre-filter: results are the best *visible* chunks), and a
defensive post-check with the reference evaluator drops (and logs) anything that slipped through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cjkrag.connectors.filters import FilterNode, acl_filter, and_, evaluate, parse_filter
from cjkrag.errors import ConfigError
from cjkrag.types import Hit, StoredHit

if TYPE_CHECKING:
    from cjkrag.config import RetrievalConfig
    from cjkrag.connectors.protocol import VectorStore
    from cjkrag.ingest.embedding.protocol import Embedder
    from cjkrag.pipeline.analyzer import CJKAnalyzer
    from cjkrag.pipeline.rerank import Reranker

log = logging.getLogger("cjkrag.search")

_drops_lock = threading.Lock()
_post_check_drops = 0


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
        depth = max(top_k, self.retrieval.candidates, self.rerank_top_n if use_rerank else 0)

        runs: dict[str, list[StoredHit]] = {}
        vector = self.embedder.embed_queries([query])[0].tolist() if mode in ("hybrid", "dense") else None
        terms = self.analyzer.analyze_query(query, language) if mode in ("hybrid", "keyword") else None
        both = getattr(self.store, "search_hybrid", None)
        if vector is not None and terms and both is not None:
            # one filter translation (and, on Milvus Lite, one round of NOT resolution) for both retrievers
            runs["dense"], runs["keyword"] = both(vector, terms, depth, combined)
        else:
            if vector is not None:
                runs["dense"] = self.store.search_dense(vector, depth, combined)
            if terms is not None:
                runs["keyword"] = self.store.search_keyword(terms, depth, combined) if terms else []

        by_id: dict[str, StoredHit] = {}
        for run in runs.values():
            for stored in run:
                by_id.setdefault(stored.chunk_id, stored)
        ranked = self._fuse(runs, by_id, query, language)
        if use_rerank and self.reranker is not None and ranked:
            ranked = self._rerank(query, ranked)
        visible = [h for h in ranked if self._visible(access, by_id[h.chunk_id])]
        return visible[:top_k]

    def _fuse(
        self, runs: dict[str, list[StoredHit]], by_id: dict[str, StoredHit], query: str = "", language: str | None = None
    ) -> list[Hit]:
        from cjkrag.pipeline.fusion import fuse

        ranked = {name: [(h.chunk_id, float(h.score)) for h in hits] for name, hits in runs.items()}
        fusion = self.retrieval.fusion
        if len(ranked) == 1:  # a single retriever: its own order and scores
            (name, run), = ranked.items()
            return [
                _hit(by_id[cid], score, {name: score}, {name: i + 1}) for i, (cid, score) in enumerate(run)
            ]
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
        out = []
        for i, item in enumerate(fused):
            scores = {**item.scores, "fused": item.score}
            ranks = {**item.ranks, "fused": i + 1}
            out.append(_hit(by_id[item.id], item.score, scores, ranks))
        return out

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        assert self.reranker is not None
        reranked = self.reranker.rerank(query, hits, lambda h: h.text, self.rerank_top_n)
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
