"""Every runnable store through the same protocol: upsert rows/s and p50/p95 of ACL-filtered dense, keyword
and hybrid search (top 50, dim 384).

    python benchmarks/stores.py                                   # 10k chunks, every runnable backend
    nice -n 10 python benchmarks/stores.py --rows 10000 100000 --queries 50 --timeout-s 1800

Results are printed as a table and written as JSON (``--json``, default ``benchmarks/results/stores.json``)
after every run, with the machine, the 1/5/15-minute load averages before and after each run, and the
process's nice value. Each run is a child process with a wall-clock bound (``--timeout-s``): a run that
does not finish is recorded as not run, with the time it was given.

Rows as in ``benchmarks/milvus_search.py`` (random unit vectors, 4-12 Zipf-drawn CJK tokens, one of 50 groups
in ``acl``, 10% public, 1% deny). Each query carries the pipeline's ACL filter for a user in 3 groups (~16%
of rows visible). Hybrid = one dense + one keyword call with the same filter (cjkrag fuses client-side,
alike on every backend; the fusion itself is microseconds). Latency: wall time per call after 10 warm-up
queries; p50/p95 over ``--queries``. Qdrant local mode is brute-force Python: at a row count past its
smallest one it runs only if its run at the smallest count, scaled linearly by rows, fits ``--timeout-s``;
otherwise it is recorded as not run with that measurement as the reason.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
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
RESULTS = Path(__file__).resolve().parent / "results" / "stores.json"


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


def _child(name: str, rows: int, dim: int, queries: int, out: Any) -> None:
    out.put(run(name, rows, dim, queries))


def _bounded(name: str, rows: int, dim: int, queries: int, timeout_s: float) -> dict[str, Any]:
    """``run`` in a child process; a result with ``not_run`` when it does not finish within ``timeout_s``."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    began = time.monotonic()
    proc = ctx.Process(target=_child, args=(name, rows, dim, queries, out))
    proc.start()
    try:
        result: dict[str, Any] = out.get(timeout=timeout_s)
    except Exception:  # queue.Empty: over the bound (or the child died)
        proc.kill()
        proc.join()
        return {"backend": name, "rows": rows, "dim": dim,
                "not_run": f"did not finish within {timeout_s:.0f} s (killed)"}  # fmt: skip
    proc.join()
    result["wall_s"] = round(time.monotonic() - began, 1)
    return result


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10000])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--timeout-s", type=float, default=1800, help="wall-clock bound of one run (one backend, one size)")
    ap.add_argument("--machine", default="", help="a note on the machine (e.g. '2-core CPU, shared')")
    ap.add_argument("--json", type=Path, default=RESULTS, help=f"write the results here (default {RESULTS})")
    args = ap.parse_args(argv)
    machine = f"{platform.machine()} {os.cpu_count()} CPUs, {platform.system()}"
    body: dict[str, Any] = {
        "machine": machine, "note": args.machine, "nice": os.nice(0), "dim": args.dim, "queries": args.queries,
        "top_k": 50, "acl_filter": "user:u1 + 3 groups, deny on every query", "results": [],
    }  # fmt: skip
    print(
        f"{'backend':<14}{'rows':>8}{'upsert/s':>10}  dense p50/p95   keyword p50/p95   hybrid p50/p95  (ms)   load"
    )
    smallest = min(args.rows)
    local_wall: float | None = None
    for rows in sorted(args.rows):
        for name in args.backends:
            load_before = _load()
            if name == "qdrant-local" and rows > smallest:
                projected = None if local_wall is None else local_wall * rows / smallest
                if projected is None or projected > args.timeout_s:
                    measured = (
                        f"took {local_wall:.0f} s at {smallest} rows" if local_wall is not None
                        else f"did not finish at {smallest} rows within {args.timeout_s:.0f} s"
                    )  # fmt: skip
                    guess = f"~{projected:.0f} s" if projected else "longer"
                    r: dict[str, Any] = {
                        "backend": name, "rows": rows, "dim": args.dim,
                        "not_run": f"brute-force Python: it {measured}; {rows} rows would take {guess} (linear "
                        f"in rows), over the {args.timeout_s:.0f} s bound",
                    }  # fmt: skip
                else:
                    r = _bounded(name, rows, args.dim, args.queries, args.timeout_s)
            else:
                r = _bounded(name, rows, args.dim, args.queries, args.timeout_s)
                if name == "qdrant-local" and rows == smallest and "not_run" not in r:
                    local_wall = float(r["wall_s"])
            r["load_avg_before"], r["load_avg_after"] = load_before, _load()
            body["results"].append(r)
            if "not_run" in r:
                print(f"{name:<14}{rows:>8}  not run: {r['not_run']}", flush=True)
            else:
                cells = "  ".join(
                    f"{r[k]['p50_ms']:>7.1f}/{r[k]['p95_ms']:<7.1f}" for k in ("dense", "keyword", "hybrid")
                )
                print(f"{name:<14}{rows:>8}{r['upsert_rows_per_s']:>10}  {cells}  {r['load_avg_after'][0]}", flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)  # after every run: a stopped run keeps its results
            args.json.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
