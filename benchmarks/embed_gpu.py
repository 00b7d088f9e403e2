"""Embedding throughput and model FLOP utilization (MFU): tuned forward passes vs naive ``SentenceTransformer.encode``.

    python benchmarks/embed_gpu.py                                   # GPU: e5-small, e5-base, XLM-R large (bge-m3 size)
    python benchmarks/embed_gpu.py --cpu --models e5-small --chunks 32 --seq 128   # small CPU run

Models: the bundled multilingual-e5-small (real weights) and, for e5-base and a bge-m3-sized XLM-R large,
random weights with the real architecture (XLM-RoBERTa configs) and the real XLM-R tokenizer (the bundled
model's): throughput does not depend on the weights. Workload: ``--chunks`` CJK passages of about ``--seq``
tokens (the shared corpora cut to length).

- naive: ``SentenceTransformer.encode(chunks, batch_size=32)`` (fp32, as a user would call it);
- tuned: tokenization up front (off the device thread), batches by a padded-token budget from
  length-sorted chunks, fp16 on CUDA (fp32 on CPU), ``torch.inference_mode``, SDPA attention, pinned
  host memory with non-blocking copies.

MFU = achieved FLOP/s / peak FLOP/s, with FLOPs per token = 2 x (non-embedding parameters) + attention
(4 x layers x hidden x sequence); the peak is ``--peak-tflops`` (default: 989 for an H100/H200 SXM in dense
fp16/bf16; on CPU no peak is assumed and only TFLOP/s is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
BEIR = ROOT.parent / "shared" / "data" / "beir"
SIZES = {  # hidden, layers, heads, intermediate
    "e5-base": (768, 12, 12, 3072),
    "xlmr-large": (1024, 24, 16, 4096),
}


def passages(n: int, seq: int, tokenizer: Any) -> list[str]:
    texts: list[str] = []
    for name in ("cmrc2018-passage", "jaquad-passage"):
        path = BEIR / name / "corpus.jsonl"
        if path.exists():
            with path.open(encoding="utf-8") as f:
                texts.extend(json.loads(line)["text"] for line in f if line.strip())
    if not texts:
        texts = ["退货政策：商品签收后三十日内可申请退款。" * 40]
    out = []
    for t in texts[: n * 2]:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"][: seq - 4]
        out.append("passage: " + tokenizer.decode(ids))
        if len(out) == n:
            break
    while len(out) < n:
        out.append(out[len(out) % max(1, len(out))])
    return out


def load(name: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer, models

    from cjkrag.ingest.embedding.bundled import ensure_bundled_model

    base = str(ensure_bundled_model(None))
    if name == "e5-small":
        return SentenceTransformer(base, device=device)
    from transformers import AutoConfig, AutoModel

    hidden, layers, heads, inter = SIZES[name]
    cfg = AutoConfig.from_pretrained(base)
    cfg.update({"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                "intermediate_size": inter, "attn_implementation": "sdpa"})  # fmt: skip
    word = models.Transformer(base, max_seq_length=512)
    word.auto_model = AutoModel.from_config(cfg, attn_implementation="sdpa")
    pool = models.Pooling(hidden, pooling_mode="mean")
    return SentenceTransformer(modules=[word, pool], device=device)


def flops_per_token(model: Any, seq: int) -> float:
    auto = model[0].auto_model
    emb = sum(p.numel() for n, p in auto.named_parameters() if "embeddings" in n)
    params = sum(p.numel() for p in auto.parameters()) - emb
    cfg = auto.config
    return 2.0 * params + 4.0 * cfg.num_hidden_layers * cfg.hidden_size * seq


def naive(model: Any, texts: list[str]) -> float:
    t0 = time.perf_counter()
    model.encode(texts, batch_size=32, show_progress_bar=False)
    return time.perf_counter() - t0


def tuned(model: Any, texts: list[str], device: str, budget: int) -> tuple[float, int]:
    import torch

    tok = model.tokenizer
    t0 = time.perf_counter()
    enc = [tok(t, truncation=True, max_length=512)["input_ids"] for t in texts]  # off the device thread
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(enc[i]) > budget:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    auto = model[0].auto_model
    half = device.startswith("cuda")
    if half:
        auto.half()
    tokens = 0
    with torch.inference_mode():
        for b in batches:
            width = max(len(enc[i]) for i in b)
            ids = torch.full((len(b), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(b), width), dtype=torch.long)
            for r, i in enumerate(b):
                ids[r, : len(enc[i])] = torch.tensor(enc[i])
                mask[r, : len(enc[i])] = 1
            tokens += int(mask.sum())
            if half:
                ids, mask = ids.pin_memory().to(device, non_blocking=True), mask.pin_memory().to(device, non_blocking=True)
            out = auto(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(out.dtype)
            _ = torch.nn.functional.normalize((out * m).sum(1) / m.sum(1), dim=-1).float().cpu()
    if half:
        torch.cuda.synchronize()
        auto.float()
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (small sizes advised)")
    ap.add_argument("--models", default="e5-small,e5-base,xlmr-large")
    ap.add_argument("--chunks", type=int, default=2048)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--budget", type=int, default=65536, help="padded tokens per tuned batch")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    peak = args.peak_tflops if args.peak_tflops is not None else (989.0 if device == "cuda" else None)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    rows = []
    for name in args.models.split(","):
        model = load(name, device)
        texts = passages(args.chunks, args.seq, model.tokenizer)
        tuned(model, texts[: min(64, len(texts))], device, args.budget)  # warm-up
        t_naive = naive(model, texts)
        t_tuned, tokens = tuned(model, texts, device, args.budget)
        fpt = flops_per_token(model, args.seq)
        tflops = fpt * tokens / t_tuned / 1e12
        rows.append({"model": name, "device": gpu, "chunks": len(texts), "tokens": tokens,
                     "naive_tok_s": tokens / t_naive, "tuned_tok_s": tokens / t_tuned,
                     "speedup": t_naive / t_tuned, "tflops": tflops,
                     "mfu": (tflops / peak) if peak else None})  # fmt: skip
        del model
    print(f"{'model':<11} {'device':<24} {'naive tok/s':>12} {'tuned tok/s':>12} {'speedup':>8} {'TFLOP/s':>8} {'MFU':>6}")
    for r in rows:
        mfu = f"{r['mfu']:.0%}" if r["mfu"] is not None else "n/a"
        print(f"{r['model']:<11} {r['device'][:24]:<24} {r['naive_tok_s']:>12,.0f} {r['tuned_tok_s']:>12,.0f} "
              f"{r['speedup']:>7.2f}x {r['tflops']:>8.2f} {mfu:>6}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
