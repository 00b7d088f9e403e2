"""Every runnable store through the same protocol: upsert rows/s and p50/p95 of ACL-filtered dense, keyword
and hybrid search (top 50, dim 384).

    python benchmarks/stores.py                                   # 10k chunks, every runnable backend
    python benchmarks/stores.py --rows 10000 100000 --backends milvus-lite qdrant-edge --json out.json

Rows as in ``benchmarks/milvus_search.py`` (random unit vectors, 4-12 Zipf-drawn CJK tokens, one of 50 groups
in ``acl``, 10% public, 1% deny). Each query carries the pipeline's ACL filter for a user in 3 groups (~16%
of rows visible). Hybrid = one dense + one keyword call with the same filter (cjkrag fuses client-side,
alike on every backend; the fusion itself is microseconds). Latency: wall time per call after 10 warm-up
queries; p50/p95 over ``--queries``. Qdrant local mode is brute-force Python and is skipped past 20k rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from milvus_search import VOCAB, _records

from cjkrag.connectors.filters import acl_filter
from cjkrag.connectors.protocol import VectorStore

BACKENDS = ("milvus-lite", "qdrant-edge", "qdrant-local")
LOCAL_MAX_ROWS = 20000


def _open(name: str, workdir: Path) -> VectorStore:
    if name == "milvus-lite":
        from cjkrag.connectors.milvus.store import MilvusStore

        return MilvusStore(str(workdir / "bench.db"), "bench")
    from cjkrag.connectors.qdrant.store import QdrantStore

    return QdrantStore("bench", mode=name.split("-", 1)[1], path=workdir)


def _pcts(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=20)
    return {"p50_ms": round(statistics.median(samples) * 1000, 2), "p95_ms": round(q[18] * 1000, 2)}


def run(name: str, rows: int, dim: int, queries: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    records = _records(rows, dim, rng)
    with tempfile.TemporaryDirectory() as tmp:
        store = _open(name, Path(tmp))
        store.warm_up()
        store.ensure_collection(dim)
        began = time.perf_counter()
        for start in range(0, rows, 1000):
            store.upsert(records[start : start + 1000])
        upsert_s = time.perf_counter() - began
        flt = acl_filter(["user:u1", "group:1", "group:2", "group:3"])
        qvecs = rng.normal(size=(queries + 10, dim))
        terms = [[str(t) for t in rng.choice(VOCAB, size=2)] for _ in range(queries + 10)]
        calls: dict[str, Callable[[int], Any]] = {
            "dense": lambda i: store.search_dense(list(qvecs[i]), 50, flt),
            "keyword": lambda i: store.search_keyword(terms[i], 50, flt),
            "hybrid": lambda i: (
                store.search_dense(list(qvecs[i]), 50, flt),
                store.search_keyword(terms[i], 50, flt),
            ),
        }
        result: dict[str, Any] = {
            "backend": name,
            "rows": rows,
            "dim": dim,
            "upsert_rows_per_s": round(rows / upsert_s),
        }
        for what, call in calls.items():
            for i in range(10):
                call(i)
            samples = []
            for i in range(10, queries + 10):
                t = time.perf_counter()
                call(i)
                samples.append(time.perf_counter() - t)
            result[what] = _pcts(samples)
        store.close()
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10000])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    args = ap.parse_args(argv)
    machine = f"{platform.machine()} {os.cpu_count()} CPUs, {platform.system()}"
    results = []
    print(
        f"{'backend':<14}{'rows':>8}{'upsert/s':>10}  dense p50/p95   keyword p50/p95   hybrid p50/p95  (ms)"
    )
    for rows in args.rows:
        for name in args.backends:
            if name == "qdrant-local" and rows > LOCAL_MAX_ROWS:
                print(
                    f"{name:<14}{rows:>8}  skipped: local mode is brute-force Python (use edge or a server)"
                )
                continue
            r = run(name, rows, args.dim, args.queries)
            results.append(r)
            cells = "  ".join(
                f"{r[k]['p50_ms']:>7.1f}/{r[k]['p95_ms']:<7.1f}" for k in ("dense", "keyword", "hybrid")
            )
            print(f"{name:<14}{rows:>8}{r['upsert_rows_per_s']:>10}  {cells}", flush=True)
            if args.json:  # after every result: a long run stopped midway keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                body = {"machine": machine, "results": results}
                args.json.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
