"""Query latency: ``Engine.search`` per mode vs the plain LangChain pipeline, same data, same model, same run.

    python benchmarks/query.py            # 10k and 100k chunks, Milvus Lite + Qdrant edge + LangChain, 100 queries
    python benchmarks/query.py --quick    # 2k chunks, 30 queries (a smoke run)

The corpus is the 848 CMRC 2018 passages (``../shared/data/beir/cmrc2018-passage``), embedded once with
the bundled e5-small (cached under ``~/.cache/cjkrag/bench``); larger sizes repeat those passages, each
repeat with its vector jittered (Gaussian noise sigma 0.02 per dimension, re-normalized, seeded), so every
size has real CJK text, real keywords and a real vector distribution without embedding 100k chunks on a CPU.
Queries are CMRC's real questions, and every query embedding is computed for real (query cache off). cjkrag runs with access control on (a user in 3 of
50 groups, 10% public chunks, 1% with a deny entry); the reference is what a LangChain user writes:
``HuggingFaceEmbeddings`` over the same model folder + ``langchain_milvus.Milvus`` (Milvus Lite) and
``similarity_search(query, k=10)``, without access control. Calls are interleaved round-robin (one query
through every system, then the next) so background load hits all systems alike. Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SETS = ("cmrc2018-passage",)
PRINCIPALS = ["group:1", "group:2", "group:3"]
LANGCHAIN = "langchain dense (no ACL)"
BACKENDS = ("milvus", "qdrant")


def load_texts(shared: Path, max_queries: int, sets: Sequence[str] = SETS) -> tuple[list[str], list[str]]:
    from cjkrag.pipeline.evaluation import load_beir

    texts: list[str] = []
    queries: list[str] = []
    for name in sets:
        folder = shared / "data" / "beir" / name
        if not folder.exists():
            sys.exit(f"{folder} is missing: this benchmark reads the shared QA sets (see ../shared/README.md)")
        beir = load_beir(folder)
        texts.extend(d.text for d in beir.corpus.values())
        queries.extend(beir.queries.values())
    rng = np.random.default_rng(0)
    picked = rng.choice(len(queries), size=min(max_queries, len(queries)), replace=False)
    return texts, [queries[int(i)] for i in picked]


def cached_passages(engine: Any, texts: list[str]) -> np.ndarray:
    key = hashlib.sha256((engine.config.embedding.model + "\0" + "\0".join(texts)).encode()).hexdigest()[:20]
    path = Path.home() / ".cache" / "cjkrag" / "bench" / f"passages-{len(texts)}-{key}.npy"
    if path.exists():
        return np.load(path)
    print(f"embedding {len(texts)} passages once (cached in {path}) ...", file=sys.stderr)
    vectors = np.asarray(engine.embedder.embed_passages(texts), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def corpus(texts: list[str], vectors: np.ndarray, keywords: list[list[str]], n: int) -> Any:
    """``n`` ChunkRecords: the real passages first, then jittered repeats (seeded)."""
    from cjkrag.types import ChunkRecord

    rng = np.random.default_rng(1)
    for i in range(n):
        base = i % len(texts)
        vec = vectors[base]
        if i >= len(texts):
            vec = vec + rng.normal(scale=0.02, size=vec.shape).astype(np.float32)
            vec = vec / np.linalg.norm(vec)
        text = texts[base]
        yield ChunkRecord(
            chunk_id=f"c{i:07d}", doc_id=f"d{i:07d}", text=text, start=0, end=len(text), chunk_index=0,
            title="", acl=[f"group:{i % 50}"], deny=["group:2"] if i % 100 == 7 else [],
            public=i % 10 == 0, metadata={"n": i}, vector=vec.tolist(), keywords=keywords[base],
            doc_hash="bench",
        )  # fmt: skip


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=20, method="inclusive")
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(q[18], 2), "n": len(ms)}


def open_backend(backend: str, n: int, texts: list[str], vectors: np.ndarray, keywords: list[list[str]],
                 engine_cfg: dict[str, Any], work: Path, shared: Any) -> tuple[Any, float]:  # fmt: skip
    """An engine over ``backend`` holding the ``n``-chunk corpus; the model/analyzer of ``shared`` reused."""
    import cjkrag

    store = {"backend": backend} if backend != "milvus" else {}
    cfg = {**engine_cfg, "data_dir": str(work / f"{backend}-{n}"), "collection": "bench", "store": store}
    engine = cjkrag.open(cfg)
    if shared is not None:  # one model in memory for all backends (same weights, same precision)
        engine._embedder, engine._analyzer = shared.embedder, shared.analyzer
    engine.store.ensure_collection(vectors.shape[1])
    t0 = time.perf_counter()
    batch: list[Any] = []
    for rec in corpus(texts, vectors, keywords, n):
        batch.append(rec)
        if len(batch) == 2000:
            engine.store.upsert(batch)
            batch = []
    if batch:
        engine.store.upsert(batch)
    return engine, time.perf_counter() - t0


def run_size(n: int, texts: list[str], vectors: np.ndarray, keywords: list[list[str]], queries: list[str],
             engine_cfg: dict[str, Any], model_dir: str, work: Path, with_langchain: bool,
             backends: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    systems: dict[str, Callable[[str], Any]] = {}
    engines: list[Any] = []
    upsert: dict[str, float] = {}
    for backend in backends:
        engine, seconds = open_backend(backend, n, texts, vectors, keywords, engine_cfg, work,
                                       engines[0] if engines else None)  # fmt: skip
        engines.append(engine)
        upsert[backend] = round(n / seconds, 1)
        for mode in ("dense", "keyword", "hybrid"):
            systems[f"{backend} {mode}"] = (
                lambda q, m=mode, e=engine: e.search(q, principals=PRINCIPALS, top_k=10, mode=m)
            )
    lc_store = None
    if with_langchain:
        lc_store = langchain_store(n, texts, vectors, model_dir, work)
        systems[LANGCHAIN] = lambda q: lc_store.similarity_search(q, k=10)
    for q in queries[:5]:  # warm-up: models, caches, lazy index loads
        for fn in systems.values():
            fn(q)
    times: dict[str, list[float]] = {name: [] for name in systems}
    for q in queries[5:]:
        for name, fn in systems.items():
            t = time.perf_counter()
            fn(q)
            times[name].append((time.perf_counter() - t) * 1000.0)
    for engine in engines:
        engine.close()
    result: dict[str, Any] = {"chunks": n, "upsert_rows_per_s": upsert}
    result["latency"] = {name: percentiles(ms) for name, ms in times.items()}
    ref = result["latency"].get(LANGCHAIN)
    if ref:
        result["ratio_to_langchain_p50"] = {
            name: round(v["p50_ms"] / ref["p50_ms"], 2) for name, v in result["latency"].items()
        }
    return result


def langchain_store(n: int, texts: list[str], vectors: np.ndarray, model_dir: str, work: Path) -> Any:
    try:
        from langchain_huggingface import HuggingFaceEmbeddings
        from langchain_milvus import Milvus
    except ImportError:
        sys.exit("the reference pipeline needs the bench extra: pip install -e '.[bench]'")
    embeddings = HuggingFaceEmbeddings(model_name=model_dir, model_kwargs={"device": "cpu"})
    store = Milvus(
        embedding_function=embeddings,
        connection_args={"uri": str(work / f"langchain-{n}.db")},
        collection_name="bench",
        auto_id=True,
    )
    rng = np.random.default_rng(1)
    for start in range(0, n, 2000):
        idx = range(start, min(n, start + 2000))
        batch_vecs = []
        for i in idx:
            vec = vectors[i % len(texts)]
            if i >= len(texts):
                vec = vec + rng.normal(scale=0.02, size=vec.shape).astype(np.float32)
                vec = vec / np.linalg.norm(vec)
            batch_vecs.append(vec.tolist())
        store.add_embeddings([texts[i % len(texts)] for i in idx], batch_vecs)
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--quick", action="store_true", help="2k chunks, 30 queries")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--no-langchain", action="store_true", help="skip the reference pipeline")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "query.json")
    args = ap.parse_args()
    if args.quick:
        args.chunks, args.queries = [2000], 30

    import cjkrag
    from cjkrag.ingest.embedding.bundled import ensure_bundled_model

    # no query-embedding cache: every call embeds its query, like the reference (which has no cache)
    engine_cfg: dict[str, Any] = {"embedding": {"model": "bundled:multilingual-e5-small"},
                                  "retrieval": {"query_cache_size": 0}}  # fmt: skip
    texts, queries = load_texts(args.shared, args.queries)
    with tempfile.TemporaryDirectory(prefix="cjkrag-bench-") as tmp:
        probe = cjkrag.open({**engine_cfg, "data_dir": tmp})
        vectors = cached_passages(probe, texts)
        keywords = probe.analyzer.analyze_many(texts, [None] * len(texts))
        results: dict[str, Any] = {
            "machine": f"{platform.machine()} {platform.processor() or ''} {_cores()} cores".strip(),
            "queries": len(queries) - 5,
            "precision": {"passages": probe.embedder.precision,
                          "queries": getattr(probe.embedder, "query_precision", "")},
            "omp": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
            "sizes": [
                run_size(n, texts, vectors, keywords, queries, engine_cfg, str(ensure_bundled_model()),
                         Path(tmp), not args.no_langchain, args.backends)
                for n in args.chunks
            ],
        }
        results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    for size in results["sizes"]:
        print(f"\n{size['chunks']:,} chunks (upsert rows/s {size['upsert_rows_per_s']})")
        print(f"{'system':28} {'p50 ms':>8} {'p95 ms':>8} {'p50 vs LC':>10}")
        for name, v in size["latency"].items():
            ratio = size.get("ratio_to_langchain_p50", {}).get(name, float("nan"))
            print(f"{name:28} {v['p50_ms']:8.1f} {v['p95_ms']:8.1f} {ratio:10.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


if __name__ == "__main__":
    main()
