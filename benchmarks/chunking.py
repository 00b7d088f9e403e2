"""Chunker throughput on CJK text (zh, ja, ko, mixed zh-en) vs the embedder's throughput on this machine.

    python benchmarks/chunking.py                     # ~1 MB per language, real tokenizer if loadable
    python benchmarks/chunking.py --mb 4 --json out.json
    python benchmarks/chunking.py --fake              # fake tokenizer (no model)

Text comes from ``../shared/data/beir/*/corpus.jsonl`` when present (cmrc2018 -> zh, jaquad -> ja,
xquad-zh -> zh in the mixed set) and from ``samples/`` (the only Korean source, and the zh-en pages),
repeated up to the requested size and grouped into documents of about ``--doc-chars`` characters.
The tokenizer is the bundled multilingual-e5-small (``load_embedder("bundled:multilingual-e5-small")``);
when it cannot be loaded the benchmark says so and uses a fake one-token-per-character tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cjkrag.ingest.chunker import TokenCounter, chunk_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "beir"
SAMPLES = ROOT / "samples"


class FakeTokenizer:
    """One token per non-space character plus 5 prefix/special tokens (used when no model loads)."""

    name = "fake (1 token per non-space char)"

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]

    def count_tokens(self, text: str) -> int:
        return 5 + sum(1 for ch in text if not ch.isspace())


class Timed:
    """Wraps a TokenCounter and measures the time spent inside it."""

    def __init__(self, inner: TokenCounter) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.count_calls = 0
        self.offset_calls = 0

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        t = time.perf_counter()
        try:
            return self.inner.token_offsets(text)
        finally:
            self.seconds += time.perf_counter() - t
            self.offset_calls += 1

    def count_tokens(self, text: str) -> int:
        t = time.perf_counter()
        try:
            return self.inner.count_tokens(text)
        finally:
            self.seconds += time.perf_counter() - t
            self.count_calls += 1


def _jsonl_texts(path: Path, key: str = "text") -> list[str]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [str(json.loads(line)[key]) for line in f if line.strip()]


def _sample_texts(prefixes: tuple[str, ...]) -> list[str]:
    return [t["text"] for t in _sample_records() if str(t["id"]).startswith(prefixes)]


def _sample_records() -> list[dict[str, Any]]:
    path = SAMPLES / "corpus.jsonl"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sources() -> dict[str, list[str]]:
    zh = _jsonl_texts(SHARED / "cmrc2018-article" / "corpus.jsonl") or _sample_texts(("zh-",))
    ja = _jsonl_texts(SHARED / "jaquad-article" / "corpus.jsonl") or _sample_texts(("ja-",))
    ko = _sample_texts(("ko-",))
    mixed = _sample_texts(("mix-",)) + [
        (SAMPLES / "docs" / name).read_text(encoding="utf-8")
        for name in ("vpn-setup.md", "api-rate-limits.md")
        if (SAMPLES / "docs" / name).exists()
    ]
    out = {"zh": zh, "ja": ja, "ko": ko, "mixed": mixed}
    missing = [k for k, v in out.items() if not v]
    if missing:
        sys.exit(f"no source text for {missing}: run from the repository (samples/ is needed)")
    return out


def documents(texts: list[str], total_bytes: int, doc_chars: int) -> Iterator[str]:
    """Documents of about ``doc_chars`` characters, cycling through ``texts`` until ``total_bytes``."""
    made = 0
    parts: list[str] = []
    size = 0
    i = 0
    while made < total_bytes:
        t = texts[i % len(texts)]
        i += 1
        parts.append(t)
        size += len(t) + 2
        if size >= doc_chars:
            doc = "\n\n".join(parts)
            made += len(doc.encode("utf-8"))
            yield doc
            parts, size = [], 0
    if parts and made < total_bytes:
        yield "\n\n".join(parts)


def load_tokenizer(force_fake: bool, model: str) -> tuple[Any, str, str | None]:
    """(tokenizer/embedder, its name, why it fell back or None)."""
    if force_fake:
        return FakeTokenizer(), FakeTokenizer.name, "--fake given"
    try:
        from cjkrag.ingest.embedding.loader import load_embedder

        emb = load_embedder(model, device="cpu")
        emb.warm_up()
        return emb, model, None
    except Exception as exc:  # any failure: report it and fall back
        return FakeTokenizer(), FakeTokenizer.name, f"{type(exc).__name__}: {exc}"


def bench_chunking(
    tok: Any, docs_by_lang: dict[str, list[str]], max_tokens: int, overlap: int
) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    sample_chunks: list[str] = []
    for lang, docs in docs_by_lang.items():
        timed = Timed(tok)
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        nchars = sum(len(d) for d in docs)
        chunk_tokens: list[int] = []
        t0 = time.perf_counter()
        for d in docs:
            chunks = chunk_text(d, timed, max_tokens=max_tokens, overlap_tokens=overlap)
            chunk_tokens.extend(c.token_count for c in chunks)
            if len(sample_chunks) < 100_000:
                sample_chunks.extend(c.text for c in chunks[:50])
        dt = time.perf_counter() - t0
        n = len(chunk_tokens)
        rows.append(
            {
                "lang": lang,
                "documents": len(docs),
                "mb": nbytes / 1e6,
                "chars": nchars,
                "chunks": n,
                "seconds": dt,
                "mb_per_s": nbytes / 1e6 / dt,
                "chunks_per_s": n / dt,
                "mean_tokens": sum(chunk_tokens) / max(n, 1),
                "max_tokens_seen": max(chunk_tokens, default=0),
                "count_calls_per_chunk": timed.count_calls / max(n, 1),
                "tokenizer_share": timed.seconds / dt,
            }
        )
    return rows, sample_chunks


def bench_embedding(emb: Any, texts: list[str], n: int) -> dict[str, Any]:
    picked = texts[:: max(1, len(texts) // n)][:n]
    emb.embed_passages(picked[:8])  # warm caches
    t0 = time.perf_counter()
    emb.embed_passages(picked)
    dt = time.perf_counter() - t0
    return {"chunks": len(picked), "seconds": dt, "chunks_per_s": len(picked) / dt}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=1.0, help="UTF-8 megabytes of text per language (default 1)")
    ap.add_argument("--doc-chars", type=int, default=20_000, help="characters per document (default 20000)")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument(
        "--embed-chunks", type=int, default=256, help="chunks to embed for the comparison (0: skip)"
    )
    ap.add_argument("--model", default="bundled:multilingual-e5-small")
    ap.add_argument("--fake", action="store_true", help="use the fake tokenizer (no model)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = ap.parse_args(argv)

    tok, tok_name, fallback = load_tokenizer(args.fake, args.model)
    if fallback:
        print(f"NOTE: real tokenizer not used ({fallback}); numbers below use {tok_name}", flush=True)
    src = sources()
    total = int(args.mb * 1e6)
    docs_by_lang = {lang: list(documents(texts, total, args.doc_chars)) for lang, texts in src.items()}
    rows, chunk_texts = bench_chunking(tok, docs_by_lang, args.max_tokens, args.overlap)

    print(f"\nchunker: max_tokens={args.max_tokens} overlap={args.overlap} tokenizer={tok_name}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    head = f"{'lang':<6} {'docs':>5} {'MB':>6} {'chunks':>7} {'s':>7} {'MB/s':>7} {'chunks/s':>9} {'tok/chunk':>9} {'count/chunk':>11} {'tokenizer%':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['lang']:<6} {r['documents']:>5} {r['mb']:>6.2f} {r['chunks']:>7} {r['seconds']:>7.2f} "
            f"{r['mb_per_s']:>7.2f} {r['chunks_per_s']:>9.0f} {r['mean_tokens']:>9.0f} "
            f"{r['count_calls_per_chunk']:>11.2f} {100 * r['tokenizer_share']:>9.0f}%"
        )

    embed: dict[str, Any] | None = None
    if args.embed_chunks > 0 and fallback is None and hasattr(tok, "embed_passages"):
        embed = bench_embedding(tok, chunk_texts, args.embed_chunks)
        chunk_rate = sum(r["chunks"] for r in rows) / sum(r["seconds"] for r in rows)
        print(
            f"\nembedder ({tok_name}, CPU): {embed['chunks']} chunks in {embed['seconds']:.1f} s = "
            f"{embed['chunks_per_s']:.1f} chunks/s; the chunker is {chunk_rate / embed['chunks_per_s']:.0f}x faster"
        )
    else:
        print("\nembedder: not measured (no real model loaded or --embed-chunks 0)")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "tokenizer": tok_name,
            "fallback_reason": fallback,
            "max_tokens": args.max_tokens,
            "overlap_tokens": args.overlap,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "chunking": rows,
            "embedding": embed,
        }
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
