"""Optimized CPU builds vs the torch model on this CPU: chunks/s on real chunks and single-query latency.

    python benchmarks/model_backends.py --build optimized/multilingual-e5-small-onnx --json out.json

``--build`` is a folder written by ``cjkrag models optimize`` (its ONNX file runs on both ONNX Runtime and
OpenVINO). Every runtime embeds the same passages (cmrc2018 + jaquad corpora from ``../shared`` cut by the
product's chunker, shuffled with a fixed seed) in length-sorted batches, and the same short queries one at
a time; the runtimes take turns round by round (interleaved), so a busy machine slows all of them alike.
Agreement: minimum and mean cosine of each runtime's vectors with torch fp32's on the same texts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "beir"


def _jsonl(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [str(json.loads(line)["text"]) for line in handle if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="folder written by `cjkrag models optimize`")
    ap.add_argument("--model", default="bundled:multilingual-e5-small", help="the torch model it was built from")
    ap.add_argument("--n", type=int, default=96, help="passages per round")
    ap.add_argument("--queries", type=int, default=40, help="single queries per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)

    from cjkrag.ingest.chunker import chunk_text
    from cjkrag.ingest.embedding.loader import load_embedder
    from cjkrag.pipeline.models.optimize import BackendEmbedder

    runtimes: dict[str, Any] = {
        "torch fp32": load_embedder(args.model, device="cpu", precision="fp32", batch_size=args.batch_size),
        "torch auto": load_embedder(args.model, device="cpu", precision="auto", batch_size=args.batch_size),
        "onnxruntime fp32": BackendEmbedder(args.build, backend="onnx", batch_size=args.batch_size),
        "openvino auto": BackendEmbedder(args.build, backend="openvino", batch_size=args.batch_size),
        "openvino fp32": BackendEmbedder(args.build, backend="openvino", precision="fp32", batch_size=args.batch_size),
    }
    for emb in runtimes.values():
        emb.warm_up()
    ref = runtimes["torch fp32"]
    docs = _jsonl(SHARED / "cmrc2018-passage" / "corpus.jsonl") + _jsonl(SHARED / "jaquad-passage" / "corpus.jsonl")
    chunks = [c.text for d in docs for c in chunk_text(d, ref, max_tokens=512, overlap_tokens=64)]
    order = np.random.default_rng(0).permutation(len(chunks))
    passages = [chunks[i] for i in order[: args.n]]
    queries = [json.loads(line)["text"] for line in
               (SHARED / "cmrc2018-passage" / "queries.jsonl").open(encoding="utf-8")][: args.queries]
    tokens = sum(ref.count_tokens(p) for p in passages)
    rates: dict[str, list[float]] = {k: [] for k in runtimes}
    lat: dict[str, list[float]] = {k: [] for k in runtimes}
    vecs: dict[str, np.ndarray] = {}
    for emb in runtimes.values():  # first-call costs out of the timing
        emb.embed_passages(passages[:4])
        emb.embed_queries(queries[:2])
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, emb in runtimes.items():
            t0 = time.perf_counter()
            vecs[name] = emb.embed_passages(passages)
            rates[name].append(len(passages) / (time.perf_counter() - t0))
        for q in queries:
            for name, emb in runtimes.items():
                t0 = time.perf_counter()
                emb.embed_queries([q])
                lat[name].append((time.perf_counter() - t0) * 1000)
    rows = []
    for name in runtimes:
        cos = (vecs[name] * vecs["torch fp32"]).sum(axis=1)
        ls = sorted(lat[name])
        rows.append({"runtime": name, "chunks_per_s": round(statistics.median(rates[name]), 2),
                     "speedup_vs_torch_fp32": round(statistics.median(rates[name]) /
                                                    statistics.median(rates["torch fp32"]), 2),
                     "query_p50_ms": round(statistics.median(ls), 1),
                     "query_p95_ms": round(ls[min(len(ls) - 1, int(0.95 * len(ls)))], 1),
                     "cos_vs_torch_fp32_min": round(float(cos.min()), 5),
                     "cos_vs_torch_fp32_mean": round(float(cos.mean()), 6)})
    meta = {"build": args.build, "model": args.model, "passages": len(passages), "tokens": tokens,
            "mean_tokens": round(tokens / len(passages), 1), "queries": len(queries), "rounds": args.rounds,
            "batch_size": args.batch_size, "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_avg_1m_start": round(load, 2), "load_avg_1m_end": round(os.getloadavg()[0], 2),
            "torch_precision_auto_chose": runtimes["torch auto"].precision}
    print(f"{len(passages)} passages ({meta['mean_tokens']} tokens each), {len(queries)} queries x {args.rounds} "
          f"rounds, {meta['cpus']} cpus, load {meta['load_avg_1m_start']}->{meta['load_avg_1m_end']}")
    print(f"{'runtime':18s} {'chunks/s':>9s} {'x torch':>8s} {'q p50':>7s} {'q p95':>7s} {'cos min':>8s}")
    for r in rows:
        print(f"{r['runtime']:18s} {r['chunks_per_s']:9.2f} {r['speedup_vs_torch_fp32']:8.2f} {r['query_p50_ms']:7.1f} "
              f"{r['query_p95_ms']:7.1f} {r['cos_vs_torch_fp32_min']:8.5f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
