"""HTTP service throughput: requests/s and p50/p95 at 1/8/16/32 concurrent clients on loopback.

    python benchmarks/service.py            # 10k chunks, batching on and off, 1/8/16/32 clients
    python benchmarks/service.py --quick    # 2k chunks, fewer requests

A Milvus Lite collection is built like ``benchmarks/query.py`` does (CMRC 2018 passages with their real
cached e5-small vectors, repeated with jittered vectors up to ``--chunks``; 50 groups, 10% public, 1% with a
deny), then ``cjkrag serve`` runs in a child process with four API keys holding different principals. Each
client thread sends hybrid ``POST /v1/search`` (top_k 10) with a real CMRC question, the 3,219 questions in
turn (the servers run with ``retrieval.query_cache_size: 0``: every request's query is embedded for real,
repeats included), for ``--requests`` requests or
``--seconds`` seconds per level, whichever comes first. Every hit is checked against the access rule of its
chunk for the key that asked (an ACL leak = a hit that key may not read); errors = any non-200.
Two servers run side by side in the same run, each on its own copy of the collection: ``batching`` (the
default settings) and ``no batching`` (``service.batch_max_size: 1``: one model call per request, the old
behaviour); levels alternate between them (1 client on each, then 8 on each, ...).
Results: ``benchmarks/results/service.json`` (with the load average: the machine may be shared).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

KEYS = {  # key -> principals
    "cjk_bench001_secret": ["user:a", "group:1", "group:2", "group:3"],
    "cjk_bench002_secret": ["user:b", "group:4"],
    "cjk_bench003_secret": ["user:c", "group:2", "group:17"],
    "cjk_bench004_secret": ["user:d"],
}


def readable(principals: list[str], i: int) -> bool:
    """The access rule ``query.corpus`` gives chunk ``i`` (acl group:i%50, 10% public, 1% deny group:2)."""
    if i % 100 == 7 and "group:2" in principals:
        return False
    return i % 10 == 0 or f"group:{i % 50}" in principals


def build(data_dir: Path, chunks: int) -> list[str]:
    from query import cached_passages, corpus, load_texts

    import cjkrag

    texts, queries = load_texts(ROOT.parent / "shared", 100000)
    engine = cjkrag.open({"data_dir": str(data_dir), "collection": "bench"})
    vectors = cached_passages(engine, texts)
    keywords = engine.analyzer.analyze_many(texts, [None] * len(texts))
    engine.store.ensure_collection(vectors.shape[1])
    batch: list[Any] = []
    for rec in corpus(texts, vectors, keywords, chunks):
        batch.append(rec)
        if len(batch) == 2000:
            engine.store.upsert(batch)
            batch = []
    engine.store.upsert(batch)
    engine.close()
    return queries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(work: Path, data_dir: Path, overlay: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    from cjkrag.service import hash_api_key

    keys = work / "keys.yaml"
    entries = [{"id": f"k{i}", "hash": hash_api_key(k), "principals": p} for i, (k, p) in enumerate(KEYS.items())]
    keys.write_text(yaml.safe_dump({"keys": entries}), encoding="utf-8")
    cfg = work / "config.yaml"
    service = {"api_keys_file": str(keys), **overlay.get("service", {})}
    retrieval = {"query_cache_size": 0, **overlay.get("retrieval", {})}  # every request embeds its query
    cfg.write_text(yaml.safe_dump({**overlay, "data_dir": str(data_dir), "collection": "bench", "service": service,
                                   "retrieval": retrieval}), encoding="utf-8")  # fmt: skip
    port = free_port()
    log = (work / f"server-{port}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "cjkrag.cli", "serve", "--config", str(cfg), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited: see {work}/server-{port}.log")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    sys.exit("the server did not become ready within 300 s")


def run_level(url: str, clients: int, queries: list[str], requests: int, seconds: float) -> dict[str, Any]:
    import httpx

    lock = threading.Lock()
    next_query = itertools.cycle(queries)  # the servers' query cache is off: a repeat is embedded again
    latencies: list[float] = []
    server_ms: list[float] = []  # the service's own took_ms: from the gate to the hits, without HTTP
    errors = leaks = checked = 0
    keys = list(KEYS)
    stop_at = time.monotonic() + seconds

    def worker(n: int) -> None:
        nonlocal errors, leaks, checked
        key = keys[n % len(keys)]
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
            while time.monotonic() < stop_at:
                with lock:
                    if len(latencies) + errors >= requests:
                        return
                    q = next(next_query, None)
                if q is None:
                    return
                t = time.perf_counter()
                try:
                    r = http.post("/v1/search", json={"query": q, "top_k": 10, "mode": "hybrid"})
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    continue
                ms = (time.perf_counter() - t) * 1000.0
                bad = 0
                ok = r.status_code == 200
                if ok:
                    body = r.json()
                    for hit in body["hits"]:
                        bad += not readable(KEYS[key], int(hit["doc_id"][1:]))
                with lock:
                    if ok:
                        latencies.append(ms)
                        server_ms.append(float(body["took_ms"]))
                        leaks += bad
                        checked += 1
                    else:
                        errors += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else [0.0] * 19
    return {"clients": clients, "requests": len(latencies) + errors, "errors": errors, "acl_leaks": leaks,
            "responses_checked": checked, "req_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p95_ms": round(q[18], 1), "seconds": round(wall, 1),
            "server_p50_ms": round(statistics.median(server_ms), 1) if server_ms else None,
            "server_p95_ms": round(statistics.quantiles(server_ms, n=20, method="inclusive")[18], 1)
            if len(server_ms) > 1 else None}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=10000)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 16, 32])
    ap.add_argument("--requests", type=int, default=300, help="per level (at most)")
    ap.add_argument("--seconds", type=float, default=30.0, help="per level (at most)")
    ap.add_argument("--variants", nargs="+", default=["batching", "no batching"],
                    help="batching | 'no batching' | 'batching, queries on all cores'")
    ap.add_argument("--quick", action="store_true", help="2k chunks, 100 requests / 15 s per level")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "service.json")
    args = ap.parse_args()
    if args.quick:
        args.chunks, args.requests, args.seconds = 2000, 100, 15.0
    # name -> config overlay of that server
    variants: dict[str, dict[str, Any]] = {
        "batching": {},
        "no batching": {"service": {"batch_max_size": 1}},
        "batching, queries on all cores": {"embedding": {"query_threads": os.cpu_count() or 1}},
    }
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "chunks": args.chunks,
        "requests_per_level": args.requests, "seconds_per_level": args.seconds,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()], "variants": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cjkrag-svc-bench-") as tmp:
        work = Path(tmp)
        queries = build(work / "data", args.chunks)
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for i, name in enumerate(args.variants):  # each server its own copy (a Lite file has one owner)
                data = work / f"data-{i}"
                shutil.copytree(work / "data", data)
                (work / f"server-{i}").mkdir()
                servers[name] = start_server(work / f"server-{i}", data, variants[name])
            used = 0
            for name, (_, url) in servers.items():
                run_level(url, 4, queries[used : used + 20], 20, 30)  # warm-up
                used = (used + 20) % len(queries)
                results["variants"][name] = []
            for c in args.clients:  # levels interleaved across servers: background load hits both alike
                for name, (_, url) in servers.items():
                    level = run_level(url, c, queries[used:] + queries[:used], args.requests, args.seconds)
                    used = (used + level["requests"]) % len(queries)
                    results["variants"][name].append(level)
                    print(f"{name:12} {c:3d} clients: {level['req_per_s']:6.1f} req/s  p50 {level['p50_ms']} ms  "
                          f"p95 {level['p95_ms']} ms  errors {level['errors']}  leaks {level['acl_leaks']}",
                          flush=True)  # fmt: skip
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(30)
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
