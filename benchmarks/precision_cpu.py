"""fp32 vs bf16 autocast for the bundled model on this CPU: seconds, and how much the vectors move.

    nice python benchmarks/precision_cpu.py --json benchmarks/results/precision-cpu.json

Same 48 real paragraphs (cmrc2018 + jaquad, as benchmarks/ingest.py), embedded once per precision after a
warm-up batch: seconds, cosine between the two vectors of each paragraph, and the overlap of each
paragraph's 5 nearest neighbours. Decides whether `embedding.precision: auto` picking bf16 is a free speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.ingest import documents
from cjkrag.ingest.embedding.loader import load_embedder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=48)
    ap.add_argument("--model", default="bundled:multilingual-e5-small")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    texts = [d["text"][:700] for d in documents(args.docs)]
    out: dict[str, object] = {"load_avg": list(os.getloadavg()), "cpus": os.cpu_count()}
    vec = {}
    for p in ("fp32", "bf16"):
        e = load_embedder(args.model, precision=p)
        e.warm_up()
        e.embed_passages(texts[:4])
        t = time.perf_counter()
        vec[p] = e.embed_passages(texts)
        out[p] = {"precision": getattr(e, "precision", p), "s": time.perf_counter() - t,
                  "tokens": sum(min(e.count_tokens(x), e.max_tokens) for x in texts)}  # fmt: skip
    cos = (vec["fp32"] * vec["bf16"]).sum(1)
    top = {p: np.argsort(-(v @ v.T), 1)[:, 1:6] for p, v in vec.items()}
    overlap = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top["fp32"], top["bf16"], strict=True)]))
    out.update(cos_min=float(cos.min()), cos_mean=float(cos.mean()), top5_neighbour_overlap=overlap,
               speedup_bf16=out["fp32"]["s"] / out["bf16"]["s"])  # type: ignore[index]  # fmt: skip
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
