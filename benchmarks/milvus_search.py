"""Milvus Lite search latency: filtered dense and BM25 keyword search through ``MilvusStore``.

    python benchmarks/milvus_search.py                          # 10k and 50k rows, dim 384
    python benchmarks/milvus_search.py --rows 10000 --queries 200 --json out.json

Rows are random: unit vectors, 4-12 keyword tokens drawn from a Zipf-like CJK vocabulary, one of 50
groups in ``acl``, 10% public, 1% with a ``deny`` entry. Each query carries the pipeline's ACL filter
(public OR acl contains_any principals, AND NOT deny contains_any principals) for a user in 3 groups,
so about 16% of the rows are visible. Latency is the wall time of one ``search_dense`` /
``search_keyword`` call (top_k=50), after 10 warm-up queries; p50/p95 over ``--queries`` queries.
On Milvus Lite the NOT part costs one extra query per search (see ``MilvusStore._without_not``); the
``unfiltered`` rows show the search alone.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cjkrag.connectors.filters import Condition, Logical
from cjkrag.connectors.milvus.store import MilvusStore
from cjkrag.types import ChunkRecord

VOCAB = [
    f"{a}{b}" for a in "東京北京首都検索日本中国서울수도数据向量模型文本系统" for b in "学市语库量型本統理報"
]


def _records(n: int, dim: int, rng: np.random.Generator) -> list[ChunkRecord]:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, len(VOCAB) + 1)
    weights /= weights.sum()
    records = []
    for i in range(n):
        kws = [str(t) for t in rng.choice(VOCAB, size=int(rng.integers(4, 13)), p=weights)]
        records.append(
            ChunkRecord(
                chunk_id=f"c{i:07d}",
                doc_id=f"d{i // 4}",
                text="".join(kws),
                start=0,
                end=len("".join(kws)),
                chunk_index=i % 4,
                title="",
                acl=[f"group:{int(rng.integers(50))}"],
                deny=["user:u1"] if rng.random() < 0.01 else [],
                public=bool(rng.random() < 0.1),
                metadata={"n": i},
                vector=vectors[i].tolist(),
                keywords=kws,
                doc_hash="h",
            )
        )
    return records


def _acl_filter(principals: list[str]) -> Logical:
    return Logical(
        "AND",
        (
            Logical("OR", (Condition("public", "==", True), Condition("acl", "contains_any", principals))),
            Logical("NOT", (Condition("deny", "contains_any", principals),)),
        ),
    )


def _stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def run(rows: int, dim: int, queries: int, workdir: Path) -> list[dict[str, Any]]:
    rng = np.random.default_rng(rows)
    store = MilvusStore(str(workdir / f"bench{rows}.db"), "bench")
    store.warm_up()
    store.drop_collection()
    store.ensure_collection(dim)
    began = time.perf_counter()
    records = _records(rows, dim, rng)
    for start in range(0, rows, 2000):
        store.upsert(records[start : start + 2000])
    insert_s = time.perf_counter() - began
    principals = ["user:u1", "group:1", "group:2", "group:3"]
    flt = _acl_filter(principals)
    qrng = random.Random(1)
    qvecs = rng.normal(size=(queries + 10, dim))
    qterms = [qrng.sample(VOCAB, 2) for _ in range(queries + 10)]
    results = []
    cases = [
        ("dense", "acl", lambda i: store.search_dense(qvecs[i].tolist(), 50, flt)),
        ("dense", "none", lambda i: store.search_dense(qvecs[i].tolist(), 50, None)),
        ("keyword", "acl", lambda i: store.search_keyword(qterms[i], 50, flt)),
        ("keyword", "none", lambda i: store.search_keyword(qterms[i], 50, None)),
    ]
    for kind, filt, fn in cases:
        for i in range(10):
            fn(queries + i)
        samples = []
        hits = 0
        for i in range(queries):
            t = time.perf_counter()
            hits += len(fn(i))
            samples.append(time.perf_counter() - t)
        results.append(
            {
                "rows": rows,
                "dim": dim,
                "search": kind,
                "filter": filt,
                "queries": queries,
                "mean_hits": round(hits / queries, 1),
                "insert_s": round(insert_s, 1),
                **_stats(samples),
            }
        )
    store.drop_collection()
    store.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    all_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cjkrag-milvus-bench-") as tmp:
        for n in args.rows:
            all_rows.extend(run(n, args.dim, args.queries, Path(tmp)))
    header = f"{'rows':>7} {'search':>8} {'filter':>6} {'p50 ms':>8} {'p95 ms':>8} {'mean hits':>9} {'insert s':>8}"
    print(header)
    for r in all_rows:
        print(
            f"{r['rows']:>7} {r['search']:>8} {r['filter']:>6} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
            f"{r['mean_hits']:>9} {r['insert_s']:>8}"
        )
    if args.json:
        meta = {"engine": "milvus-lite", "python": sys.version.split()[0]}
        args.json.write_text(json.dumps({"meta": meta, "results": all_rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
