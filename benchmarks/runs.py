"""Cached retrieval runs for the quality benchmarks: embed each corpus once, then compare anything cheaply.

    python benchmarks/runs.py embed ../shared/data/beir/jaquad-passage /tmp/beir/lcqmc ...   # fill the cache
    python benchmarks/runs.py embed SET --title                                           # title + text too

Vectors are cached per text under ``cjkrag-data/bench-cache/<model>/<side>/`` (git-ignored; keyed by the
SHA-256 of the text, per model and side), so a changed text or model is a new entry and nothing stale is ever
reused; ``benchmarks/acceptance.py`` ingests through the same cache (:class:`CachedEmbedder`). The dense run of a query is the exact inner-product top 100 over the
cached passage vectors (what Milvus' FLAT index returns); the keyword run is bm25s over the analyzer's terms
(Milvus Lite's BM25 scores differ in detail, so these runs are for comparing variants, while ``cjkrag eval``
measures the product). A document is embedded whole here (the passage and sentence sets fit the 512-token
window; the ``-article`` sets need the engine's chunking and are measured with ``cjkrag eval``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "cjkrag-data" / "bench-cache"
DEPTH = 100


@dataclass
class EvalSet:
    name: str
    ids: list[str]
    titles: list[str]
    texts: list[str]
    qids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]

    def relevant(self) -> list[set[int]]:
        index = {d: i for i, d in enumerate(self.ids)}
        return [{index[d] for d, r in self.qrels[q].items() if r > 0 and d in index} for q in self.qids]

    def self_index(self) -> list[int]:
        """Per query, the document that is the query itself (pair sets), or -1."""
        index = {d: i for i, d in enumerate(self.ids)}
        return [index.get(q, -1) for q in self.qids]


def load_set(path: Path | str) -> EvalSet:
    from cjkrag.pipeline.evaluation import load_beir

    beir = load_beir(Path(path))
    docs = list(beir.corpus.values())
    return EvalSet(
        name=beir.name,
        ids=[d.id for d in docs],
        titles=[d.title for d in docs],
        texts=[d.text for d in docs],
        qids=list(beir.queries),
        queries=list(beir.queries.values()),
        qrels={q: dict(v) for q, v in beir.qrels.items()},
    )


_EMBEDDER: Any = None


def embedder() -> Any:
    global _EMBEDDER
    if _EMBEDDER is None:
        import cjkrag

        _EMBEDDER = cjkrag.open().embedder
    return _EMBEDDER


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


class NotCached(LookupError):
    pass


class TextCache:
    """Vectors by text: ``<CACHE>/<model>/<side>/*.npz`` shards of (sha256 of the text, vector), loaded once.
    A text is embedded at most once per model and side, whichever benchmark asks first (the engine's ingest
    through :class:`CachedEmbedder`, or :func:`vectors`)."""

    def __init__(self, model: str, side: str) -> None:
        self.folder = CACHE / _slug(model) / side
        self.side = side
        self.known: dict[bytes, np.ndarray] = {}
        for shard in sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []:
            with np.load(shard) as data:
                self.known.update(zip(data["keys"].tolist(), data["vecs"], strict=True))

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def get(self, texts: Sequence[str], embed: Any, *, cached_only: bool = False) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self.known))
        if missing and cached_only:
            raise NotCached(f"{self.side}: {len(missing)} of {len(texts)} texts")
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            t0 = time.perf_counter()
            step = 256
            for k in range(0, len(missing), step):
                part = missing[k : k + step]
                vecs = np.asarray(embed([text_of[x] for x in part]), dtype=np.float32)
                self.known.update(zip(part, vecs, strict=True))
                self.folder.mkdir(parents=True, exist_ok=True)
                name = hashlib.sha256(b"".join(part)).hexdigest()[:24]
                tmp = self.folder / f".{name}.tmp.npz"
                np.savez(tmp, keys=np.array(part, dtype="S32"), vecs=vecs)
                tmp.replace(self.folder / f"{name}.npz")
                done = k + len(part)
                if len(missing) > step:
                    print(f"  {self.side}: {done}/{len(missing)} ({done / (time.perf_counter() - t0):.1f}/s)",
                          file=sys.stderr)
        if not keys:
            return np.zeros((0, 0), np.float32)
        return np.stack([self.known[k] for k in keys]).astype(np.float32)


_CACHES: dict[tuple[str, str], TextCache] = {}


def text_cache(model: str, side: str) -> TextCache:
    if (model, side) not in _CACHES:
        _CACHES[model, side] = TextCache(model, side)
    return _CACHES[model, side]


class CachedEmbedder:
    """An engine embedder whose passage and query vectors go through the :class:`TextCache` (same model,
    same texts, same vectors), so re-ingesting a corpus for another variant embeds only new texts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_tokens = inner.max_tokens

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return text_cache(self.name, "passage").get(texts, self.inner.embed_passages)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return text_cache(self.name, "query").get(texts, self.inner.embed_queries)


def vectors(
    texts: Sequence[str], side: str, model: str = "bundled:multilingual-e5-small", *, cached_only: bool = False
) -> np.ndarray:
    """(n, dim) float32 vectors of ``texts`` as passages or queries, from the cache or embedded now
    (``cached_only``: raise :class:`NotCached` instead of embedding)."""
    cache = text_cache(model, side)

    def embed(batch: Sequence[str]) -> np.ndarray:
        emb = embedder()
        if emb.name != model and not model.endswith(emb.name):
            print(f"[note] embedder is {emb.name}, cache key says {model}", file=sys.stderr)
        return emb.embed_passages(batch) if side == "passage" else emb.embed_queries(batch)

    return cache.get(texts, embed, cached_only=cached_only)


def passage_texts(s: EvalSet, title: bool) -> list[str]:
    return [f"{t}\n{x}" if title and t else x for t, x in zip(s.titles, s.texts, strict=True)]


def dense_run(
    s: EvalSet, *, title: bool = False, depth: int = DEPTH, cached_only: bool = False
) -> list[list[tuple[int, float]]]:
    """Per query, ``(doc index, cosine)`` best first (exact search), the query's own document dropped."""
    docs = vectors(passage_texts(s, title), "passage", cached_only=cached_only)
    queries = vectors(s.queries, "query", cached_only=cached_only)
    own = s.self_index()
    out: list[list[tuple[int, float]]] = []
    for k in range(0, len(queries), 512):
        sims = queries[k : k + 512] @ docs.T
        for row, qi in zip(sims, range(k, k + len(sims)), strict=True):
            if own[qi] >= 0:
                row[own[qi]] = -np.inf
            top = np.argpartition(-row, min(depth, len(row) - 1))[:depth]
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([(int(i), float(row[i])) for i in top if np.isfinite(row[i])])
    return out


def bm25_run(
    doc_tokens: list[list[str]],
    query_tokens: list[list[str]],
    own: Sequence[int] = (),
    *,
    k1: float = 1.5,
    b: float = 0.75,
    depth: int = DEPTH,
) -> list[list[tuple[int, float]]]:
    """Per query, ``(doc index, BM25 score > 0)`` best first (bm25s, Lucene variant)."""
    import bm25s

    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(doc_tokens, show_progress=False)
    qs = [q or ["\x00empty"] for q in query_tokens]
    k = min(depth + 1, len(doc_tokens))
    top, scores = retriever.retrieve(qs, k=k, show_progress=False, n_threads=1)
    out = []
    for qi, (row, srow) in enumerate(zip(top, scores, strict=True)):
        mine = own[qi] if own else -1
        out.append([(int(d), float(x)) for d, x in zip(row, srow, strict=True) if x > 0 and int(d) != mine][:depth])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["embed"])
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--title", action="store_true", help="also embed title + text passages")
    args = ap.parse_args(argv)
    for folder in args.sets:
        s = load_set(folder)
        print(f"{s.name}: {len(s.texts)} documents, {len(s.queries)} queries", file=sys.stderr)
        vectors(s.queries, "query")
        vectors(passage_texts(s, False), "passage")
        if args.title and any(s.titles):
            vectors(passage_texts(s, True), "passage")
        print(json.dumps({"set": s.name, "cached": True}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
