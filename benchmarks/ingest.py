"""End-to-end ingestion: `cjkrag` (Engine.ingest) vs a plain reference pipeline, same documents, same model.

    nice python benchmarks/ingest.py --docs 2000          # both pipelines, side by side, as a ratio
    python benchmarks/ingest.py --docs 300 --json benchmarks/results/ingest-cpu.json

Documents: the cmrc2018 (zh) and jaquad (ja) passages of ``../shared/data/beir`` (real paragraphs, a title
each), interleaved, the first ``--docs``. Store: Milvus Lite, a fresh file per pipeline.

- cjkrag: ``Engine.ingest`` with the configured model (default: the bundled multilingual-e5-small),
  public documents; prints per-stage busy seconds (prepare = read + manifest lookup + chunk + analyze,
  embed, write) and which stage is the bottleneck.
- reference, as a user would write it: LangChain ``RecursiveCharacterTextSplitter(chunk_size=512,
  chunk_overlap=64)`` + ``SentenceTransformer.encode(chunks, batch_size=32)`` (same model folder, with the
  ``passage: `` prefix) + ``pymilvus.MilvusClient`` insert.

Each pipeline runs in its own subprocess, so each peak RSS is its own. The reference does not analyze
keywords (no BM25): it does less work than cjkrag.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
BEIR = ROOT.parent / "shared" / "data" / "beir"
SETS = ("cmrc2018-passage", "jaquad-passage")


def documents(n: int) -> list[dict[str, Any]]:
    per_set = []
    for name in SETS:
        path = BEIR / name / "corpus.jsonl"
        if not path.exists():
            sys.exit(f"{path} is missing: this benchmark reads the ../shared corpora")
        with path.open(encoding="utf-8") as f:
            per_set.append([json.loads(line) for line in f if line.strip()])
    out: list[dict[str, Any]] = []
    for i in range(max(len(s) for s in per_set)):
        for name, rows in zip(SETS, per_set, strict=True):
            if i < len(rows) and len(out) < n:
                r = rows[i]
                out.append({"id": f"{name}/{r['_id']}", "title": r.get("title", ""), "text": r["text"], "public": True})
    return out


def token_stats(lengths: list[int], batch: int = 32) -> dict[str, Any]:
    """Tokens the forward pass sees: real, and padded when the chunks run in length-sorted batches of ``batch``
    (what SentenceTransformer.encode and cjkrag's embedder both do)."""
    srt = sorted(lengths, reverse=True)
    padded = sum(max(srt[i : i + batch]) * len(srt[i : i + batch]) for i in range(0, len(srt), batch))
    return {"tokens": sum(lengths), "padded_tokens": padded, "mean_chunk_tokens": sum(lengths) / max(1, len(lengths)),
            "max_chunk_tokens": max(lengths, default=0)}  # fmt: skip


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cjkrag(docs: list[dict[str, Any]], model: str, tmp: Path, precision: str = "auto",
               workers: int = 0, pad_waste: float | None = None) -> dict[str, Any]:  # fmt: skip
    import cjkrag
    from cjkrag.ingest import stages as stages_mod

    if pad_waste is not None:
        stages_mod.PAD_WASTE = pad_waste

    eng = cjkrag.open({"data_dir": str(tmp), "embedding": {"model": model, "precision": precision},
                       "ingest": {"workers": workers}})  # fmt: skip
    t0 = time.perf_counter()
    eng.warm_up()
    load_s = time.perf_counter() - t0
    load_before = _load()
    t0 = time.perf_counter()
    rep = eng.ingest(docs)
    total = time.perf_counter() - t0
    load_after = _load()
    precision = getattr(eng.embedder, "precision", "?")
    texts = [str(r["text"]) for r in eng.store.query(None, ["text"], limit=rep.chunks + 10)]
    toks = token_stats([min(eng.embedder.count_tokens(t), eng.embedder.max_tokens) for t in texts])
    eng.close()
    stages = dict(rep.stages)
    return {
        "pipeline": "cjkrag", "docs": rep.documents, "chunks": rep.chunks, "tokens": rep.tokens,
        "failed": len(rep.failed), "seconds": total, "load_s": load_s, "stages": stages,
        "bottleneck": max(stages, key=lambda k: stages[k]) if stages else "", "precision": precision, "workers": workers,
        "pad_waste": stages_mod.PAD_WASTE, "padded_tokens_computed": rep.padded_tokens,
        "peak_rss_mb": _peak_rss_mb(), "load_avg_before": load_before, "load_avg_after": load_after, **toks,
        "embed_s_per_1k_tokens": 1000 * stages.get("embed", 0.0) / max(1, toks["tokens"]),
    }  # fmt: skip


def run_reference(docs: list[dict[str, Any]], model: str, tmp: Path) -> dict[str, Any]:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pymilvus import DataType, MilvusClient
    from sentence_transformers import SentenceTransformer

    from cjkrag.connectors.milvus.lite import import_milvus_lite

    import_milvus_lite()
    t0 = time.perf_counter()
    path = model
    if model.startswith("bundled:"):
        from cjkrag.ingest.embedding.bundled import ensure_bundled_model

        path = str(ensure_bundled_model(None))
    st = SentenceTransformer(path, device="cpu")
    client = MilvusClient(str(tmp / "ref.db"))
    load_s = time.perf_counter() - t0

    load_before = _load()
    t0 = time.perf_counter()
    splitter = RecursiveCharacterTextSplitter(chunk_size=512, chunk_overlap=64)
    chunks, ids = [], []
    for d in docs:
        for j, c in enumerate(splitter.split_text(d["text"])):
            chunks.append(c)
            ids.append(f"{d['id']}#{j}")
    t_split = time.perf_counter() - t0
    t0 = time.perf_counter()
    vecs = st.encode(["passage: " + c for c in chunks], batch_size=32, normalize_embeddings=True)
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(vecs.shape[1]))
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection("ref", schema=schema, index_params=index)
    rows = [{"id": i, "text": c, "vector": v.tolist()} for i, c, v in zip(ids, chunks, vecs, strict=True)]
    for s in range(0, len(rows), 256):
        client.insert("ref", rows[s : s + 256])
    t_write = time.perf_counter() - t0
    client.close()
    load_after = _load()
    tok = st.tokenizer
    lengths = [min(len(tok("passage: " + c)["input_ids"]), st.max_seq_length) for c in chunks]
    toks = token_stats(lengths)
    stages = {"split": t_split, "embed": t_embed, "write": t_write}
    return {
        "pipeline": "reference", "docs": len(docs), "chunks": len(chunks), "seconds": sum(stages.values()),
        "load_s": load_s, "stages": stages, "bottleneck": max(stages, key=lambda k: stages[k]),
        "peak_rss_mb": _peak_rss_mb(), "load_avg_before": load_before, "load_avg_after": load_after, **toks,
        "embed_s_per_1k_tokens": 1000 * t_embed / max(1, toks["tokens"]),
    }  # fmt: skip


def _child(args: argparse.Namespace) -> None:
    docs = documents(args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        if args.only == "cjkrag":
            print(json.dumps(run_cjkrag(docs, args.model, Path(tmp), args.precision, args.workers, args.pad_waste)))
        else:
            print(json.dumps(run_reference(docs, args.model, Path(tmp))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--model", default="bundled:multilingual-e5-small")
    ap.add_argument("--only", choices=["cjkrag", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--precision", default="auto", help="cjkrag's embedding.precision (auto measures at start)")
    ap.add_argument("--workers", type=int, default=0, help="cjkrag's ingest.workers (chunk + analyze processes)")
    ap.add_argument("--pad-waste", type=float, help="cjkrag's largest padding share per embedding batch "
                    "(default ingest/stages.py PAD_WASTE; 1.0: no cap, the old batching)")
    args = ap.parse_args()
    if args.only:
        _child(args)
        return
    results = []
    for which in ("cjkrag", "reference"):
        cmd = [sys.executable, __file__, "--docs", str(args.docs), "--model", args.model, "--only", which,
               "--precision", args.precision, "--workers", str(args.workers)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if proc.returncode:
            sys.exit(f"{which} failed:\n{proc.stderr[-4000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'pipeline':<10} {'docs':>5} {'chunks':>6} {'s':>7} {'docs/s':>7} {'chunks/s':>8} {'peak RSS MB':>11}  stages (busy s)")
    for r in results:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
        print(f"{r['pipeline']:<10} {r['docs']:>5} {r['chunks']:>6} {r['seconds']:>7.1f} {r['docs'] / r['seconds']:>7.2f} "
              f"{r['chunks'] / r['seconds']:>8.2f} {r['peak_rss_mb']:>11.0f}  {stages}; bottleneck: {r['bottleneck']}")  # fmt: skip
    print(f"{'pipeline':<10} {'tokens':>8} {'padded':>8} {'mean/chunk':>10} {'embed s':>8} {'s/1k tok':>8}  load avg")
    for r in results:
        print(f"{r['pipeline']:<10} {r['tokens']:>8} {r['padded_tokens']:>8} {r['mean_chunk_tokens']:>10.0f} "
              f"{r['stages']['embed']:>8.1f} {r['embed_s_per_1k_tokens']:>8.2f}  {r['load_avg_before']} -> {r['load_avg_after']}")  # fmt: skip
    ours, ref = results
    ratio = (ours["docs"] / ours["seconds"]) / (ref["docs"] / ref["seconds"])
    token_ratio = ref["tokens"] / max(1, ours["tokens"])
    speed_ratio = ref["embed_s_per_1k_tokens"] / max(1e-9, ours["embed_s_per_1k_tokens"])
    print(f"cjkrag precision: {ours.get('precision')}; docs/s ratio cjkrag / reference: {ratio:.2f}x "
          "(model loading excluded from both)")  # fmt: skip
    print(f"  = tokens embedded (reference / cjkrag) {token_ratio:.2f} x forward speed per token (cjkrag / "
          f"reference) {speed_ratio:.2f}, less the non-embedding time")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"docs": args.docs, "results": results, "ratio": ratio,
                                         "token_ratio": token_ratio, "per_token_speed_ratio": speed_ratio,
                                         "cpus": os.cpu_count()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
