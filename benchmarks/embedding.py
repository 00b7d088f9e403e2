"""Embedder throughput and agreement per device and precision (the ingest job's embedding stage).

    python benchmarks/embedding.py                                  # bundled e5-small, this machine
    python benchmarks/embedding.py --device cuda --precisions fp32,auto --batch-sizes 32,128,256
    python benchmarks/embedding.py --model /path/to/model --texts chunks.jsonl --reference ref.npy --json out.json

Workload: passages (``--texts`` jsonl with ``text``, or the cmrc2018 / jaquad corpora of ``../shared`` cut into
chunks of at most ``--max-tokens`` model tokens by the product's chunker, or ``samples/`` as a last resort),
embedded as the ingest job does (``embed_passages``: ``passage:`` prefix, length-sorted batches). For each
precision and batch size it prints chunks/s, tokens/s and peak GPU memory, and for comparison the same
batches in input order (``unsorted``: what padding costs without length sorting).

Agreement: every run's vectors are compared (cosine, per text) with the fp32 run on the same device, and with
``--reference`` vectors (``.npy``, same texts and order) computed elsewhere, e.g. on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "beir"


def _jsonl(path: Path, key: str = "text") -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [str(json.loads(line)[key]) for line in handle if line.strip()]


def load_texts(args: argparse.Namespace, emb: Any) -> tuple[list[str], str]:
    """Passages to embed and where they came from."""
    if args.texts:
        return _jsonl(Path(args.texts))[: args.n], str(args.texts)
    from cjkrag.ingest.chunker import chunk_text

    docs: list[str] = []
    used: list[str] = []
    for name in ("cmrc2018-passage", "jaquad-passage"):
        corpus = SHARED / name / "corpus.jsonl"
        if corpus.is_file():
            docs += _jsonl(corpus)
            used.append(name)
    if not docs:
        docs = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "samples" / "docs").glob("*.*"))]
        used.append("samples/docs")
    limit = min(args.max_tokens, emb.max_tokens)
    chunks = [c.text for doc in docs for c in chunk_text(doc, emb, max_tokens=limit, overlap_tokens=64)]
    # interleave the sources so any --n prefix mixes languages and lengths
    rng = np.random.default_rng(0)
    order = rng.permutation(len(chunks))
    return [chunks[i] for i in order[: args.n]], "+".join(used) + f" (chunks <= {limit} tokens)"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((an * bn).sum(axis=1))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_one(
    args: argparse.Namespace, precision: str, batch: int, texts: list[str]
) -> tuple[dict[str, Any], np.ndarray, Any]:
    from cjkrag.ingest.embedding.loader import load_embedder

    repeats = args.repeats
    emb = load_embedder(
        args.model, device=args.device, batch_size=batch, precision=precision, profile=args.profile
    )
    emb.warm_up()
    emb.embed_passages(texts[: min(len(texts), batch * 2)])  # warm-up: kernels, allocator, autotuning
    dev = str(emb.device)
    peak = None
    if dev.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    vecs = np.zeros((0, 0), dtype=np.float32)
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        vecs = emb.embed_passages(texts)
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    # the same batches in input order (no length sorting): what the sort saves
    unsorted = float("inf")
    for _ in range(repeats if args.unsorted else 0):
        _sync(dev)
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            emb._encode(texts[i : i + batch], emb.passage_prefix)
        _sync(dev)
        unsorted = min(unsorted, time.perf_counter() - t0)
    if dev.startswith("cuda"):
        import torch

        peak = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    tokens = sum(emb.count_tokens(t) for t in texts)
    row = {
        "device": dev,
        "precision": emb.precision,
        "batch_size": batch,
        "texts": len(texts),
        "tokens": tokens,
        "seconds": round(best, 4),
        "chunks_per_s": round(len(texts) / best, 1),
        "tokens_per_s": round(tokens / best, 0),
        "unsorted_chunks_per_s": round(len(texts) / unsorted, 1) if args.unsorted else None,
        "peak_gpu_mib": peak,
    }
    return row, vecs, emb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled:multilingual-e5-small")
    ap.add_argument("--profile", default="auto", help="model profile (prefixes), e.g. bundled for a converted e5")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--precisions", default="fp32,auto", help="comma list of fp32, auto, fp16, bf16")
    ap.add_argument("--batch-sizes", default="32", help="comma list, e.g. 32,128,256")
    ap.add_argument("--n", type=int, default=512, help="passages to embed per run")
    ap.add_argument("--max-tokens", type=int, default=512, help="chunk size when chunking the corpora")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per run (the best counts)")
    ap.add_argument("--unsorted", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the same batches in input order")
    ap.add_argument("--texts", help="jsonl with a 'text' per line (instead of the shared corpora)")
    ap.add_argument("--reference", help=".npy vectors of the same texts computed elsewhere (e.g. CPU fp32)")
    ap.add_argument("--save-vectors", help="write the first fp32 run's vectors here (.npy)")
    ap.add_argument("--json", dest="json_out", help="write the rows as JSON here")
    args = ap.parse_args(argv)

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    from cjkrag.ingest.embedding.loader import load_embedder

    probe = load_embedder(args.model, device="cpu", profile=args.profile)
    texts, source = load_texts(args, probe)
    del probe
    reference = np.load(args.reference) if args.reference else None
    if reference is not None:
        reference = reference[: len(texts)]  # the reference may cover more of the same texts

    rows: list[dict[str, Any]] = []
    base: np.ndarray | None = None
    for precision in precisions:
        for batch in batches:
            row, vecs, emb = run_one(args, precision, batch, texts)
            if base is None and row["precision"] == "fp32":
                base = vecs
                if args.save_vectors:
                    np.save(args.save_vectors, vecs)
            if base is not None:
                c = cosines(vecs, base)
                row["cos_vs_fp32_min"] = round(float(c.min()), 6)
            if reference is not None:
                c = cosines(vecs[: reference.shape[0]], reference)  # the first rows: same texts
                row["cos_vs_reference_min"] = round(float(c.min()), 6)
                row["cos_vs_reference_mean"] = round(float(c.mean()), 6)
            rows.append(row)
            del emb

    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        torch_version = None
    header = ["device", "precision", "batch", "chunks/s", "unsorted", "tokens/s", "peak MiB", "cos fp32", "cos ref"]
    print(f"model {args.model} | {len(texts)} passages from {source} | {platform.processor() or platform.machine()}"
          f" {os.cpu_count()} cpus | gpu {gpu} | torch {torch_version}")
    print("  ".join(f"{h:>10}" for h in header))
    for r in rows:
        cells = [
            r["device"], r["precision"], r["batch_size"], r["chunks_per_s"], r["unsorted_chunks_per_s"] or "-",
            int(r["tokens_per_s"]), r["peak_gpu_mib"] or "-", r.get("cos_vs_fp32_min", "-"),
            r.get("cos_vs_reference_min", "-"),
        ]
        print("  ".join(f"{c!s:>10}" for c in cells))
    if args.json_out:
        meta = {"model": args.model, "source": source, "gpu": gpu, "torch": torch_version, "cpus": os.cpu_count()}
        Path(args.json_out).write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
