"""Which OpenMP wait policy serves both torch (query embedding, in this process) and Milvus Lite (its child).

    python benchmarks/thread_policy.py            # 2 rounds x 6 policies, 40 queries each
    python benchmarks/thread_policy.py --quick    # 1 round, 15 queries

Both sides use GNU OpenMP (torch's bundled libgomp here; the ``milvus`` binary of milvus-lite links the
system libgomp), and libgomp reads ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` once, when it loads. The Milvus
Lite server is a child process started with a copy of the environment, so the two sides can get different
policies: each policy below runs in a fresh Python process, which sets the torch side before torch loads and
the child's side just before the Lite server starts. Per policy it times, interleaved per query: one query
embedding (``embed_queries([q])``), a dense store search at depth 100 with the access filter, and a whole
``Engine.search(mode="hybrid")``. Policies run round-robin (rounds) so background load hits all alike.
Results: ``benchmarks/results/thread_policy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: name -> (torch-side env, milvus-child env); None removes the variable
POLICIES: dict[str, tuple[dict[str, str | None], dict[str, str | None]]] = {
    "passive/passive (old default)": ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "gomp-default/gomp-default": ({"OMP_WAIT_POLICY": None}, {"OMP_WAIT_POLICY": None}),
    "active/passive": ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "gomp-default/passive": ({"OMP_WAIT_POLICY": None}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "spin10k/passive": ({"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "spin100k/passive": ({"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "100000"},
                         {"OMP_WAIT_POLICY": "PASSIVE"}),
    "active/active": ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}),
    # a thread budget split: torch on one thread, the other core left to the Lite server
    "passive 1 torch thread/passive": ({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
                                       {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def _apply(env: dict[str, str | None]) -> None:
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def worker(policy: str, db_dir: str, n_queries: int) -> dict[str, Any]:
    torch_env, child_env = POLICIES[policy]
    os.environ["CJKRAG_LITE_OMP_WAIT_POLICY"] = ""  # the store's own child policy off: set here, per policy
    import cjkrag  # sets the package defaults; the policy overrides them before torch loads

    _apply(torch_env)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from query import PRINCIPALS, load_texts

    from cjkrag.connectors.filters import acl_filter

    engine = cjkrag.open({"data_dir": db_dir, "collection": "bench"})
    _ = engine.embedder  # torch loads with the torch-side env
    _apply({**{k: None for k in torch_env}, **child_env})  # the child gets exactly its own env
    _ = engine.pipeline  # the Lite server starts now
    _, queries = load_texts(ROOT.parent / "shared", n_queries + 5)
    access = acl_filter(PRINCIPALS)
    times: dict[str, list[float]] = {"embed": [], "dense_store": [], "hybrid": []}
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        vec = engine.embedder.embed_queries([q + " " * 0])[0].tolist()
        t1 = time.perf_counter()
        engine.store.search_dense(vec, 100, access)
        t2 = time.perf_counter()
        engine.search(q + "?", principals=PRINCIPALS, mode="hybrid")  # "?": not a cached embedding
        t3 = time.perf_counter()
        if i >= 5:
            times["embed"].append((t1 - t0) * 1e3)
            times["dense_store"].append((t2 - t1) * 1e3)
            times["hybrid"].append((t3 - t2) * 1e3)
    engine.close()
    return times


def build(db_dir: str, chunks: int) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from query import cached_passages, corpus, load_texts

    import cjkrag

    texts, _ = load_texts(ROOT.parent / "shared", 10)
    engine = cjkrag.open({"data_dir": db_dir, "collection": "bench"})
    vectors = cached_passages(engine, texts)
    keywords = engine.analyzer.analyze_many(texts, [None] * len(texts))
    engine.store.ensure_collection(vectors.shape[1])
    engine.store.upsert(list(corpus(texts, vectors, keywords, chunks)))
    engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--chunks", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="1 round, 15 queries, 2000 chunks")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "thread_policy.json")
    ap.add_argument("--policies", nargs="+", choices=list(POLICIES), help="a subset (default: all)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.db, args.queries)))
        return
    if args.quick:
        args.rounds, args.queries, args.chunks = 1, 15, 2000
    with tempfile.TemporaryDirectory(prefix="cjkrag-threads-") as tmp:
        build(tmp, args.chunks)
        chosen = args.policies or list(POLICIES)
        samples: dict[str, dict[str, list[float]]] = {p: {} for p in chosen}
        for _ in range(args.rounds):
            for policy in chosen:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", policy, "--db", tmp, "--queries", str(args.queries)],
                    capture_output=True, text=True, timeout=600, check=True,
                )  # fmt: skip
                for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    samples[policy].setdefault(k, []).extend(v)
                print(policy, {k: round(statistics.median(v), 1) for k, v in samples[policy].items()}, flush=True)
    table = {p: {k: round(statistics.median(v), 1) for k, v in s.items()} for p, s in samples.items()}
    print(f"{'policy (torch/milvus child)':32} {'embed p50':>10} {'dense@100':>10} {'hybrid p50':>11}")
    for p, row in table.items():
        print(f"{p:32} {row['embed']:10.1f} {row['dense_store']:10.1f} {row['hybrid']:11.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"chunks": args.chunks, "rounds": args.rounds, "queries": args.queries,
                                     "load_avg": os.getloadavg(), "p50_ms": table}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
