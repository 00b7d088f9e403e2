"""Fusion variants on the same dense and keyword runs: which way of combining them ranks best, per set.

    python benchmarks/fusion.py ../shared/data/beir/xquad-zh-article
    python benchmarks/fusion.py ../shared/data/beir/*-passage --max-queries 1000 --json fusion.json

For each BEIR set the corpus is ingested as ``cjkrag eval`` does (its own Milvus Lite file under
``<data_dir>/eval/``; unchanged documents are skipped, so a set evaluated before is not embedded again).
Each query runs once in ``dense`` and once in ``keyword`` mode (top 100 chunks each, the engine's
``retrieval.candidates``); every fusion variant then fuses those same two chunk runs with the pure
functions of ``cjkrag.pipeline.fusion``, chunks collapse to documents (a document ranks where its best
chunk ranks) and ir-measures scores the result. So the variants differ only in fusion, never in retrieval.

Besides the means it counts, per query, whether the first relevant document ranks higher (win) or lower
(loss) than with the best single retriever, with a two-sided sign test: a small mean difference with a
large p-value is noise, not a loss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from cjkrag.pipeline.evaluation import chunk_hits_to_doc_run, evaluate_run, load_beir, use_eval_store
from cjkrag.pipeline.fusion import fuse

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "weighted zscore (default)": ("weighted", {"normalization": "zscore"}),
    "rrf k=60": ("rrf", {"k": 60}),
    "rrf k=60 kw 1 : dense 0.5": ("rrf", {"k": 60, "weights": {"keyword": 1.0, "dense": 0.5}}),
    "rrf k=60 kw 0.5 : dense 1": ("rrf", {"k": 60, "weights": {"keyword": 0.5, "dense": 1.0}}),
    "rrf k=10": ("rrf", {"k": 10}),
    "weighted minmax": ("weighted", {"normalization": "minmax"}),
    "dbsf": ("dbsf", {}),
}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (p = 0.5) p-value of ``wins`` vs ``losses`` (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def first_relevant_rank(ranked: Sequence[str], relevant: Mapping[str, int]) -> int:
    for i, doc in enumerate(ranked, 1):
        if relevant.get(doc, 0) > 0:
            return i
    return 10**6


def collect(beir_dir: Path, config: str | None, max_queries: int | None) -> tuple[Any, dict[str, Any]]:
    import cjkrag

    beir = load_beir(beir_dir, max_queries=max_queries)
    engine = cjkrag.open(config)
    use_eval_store(engine.config, beir_dir.resolve().name)  # the store `cjkrag eval` fills: reused
    report = engine.ingest(beir.documents())
    print(f"{beir.name}: {report.summary()}", file=sys.stderr)
    depth = engine.config.retrieval.candidates
    runs: dict[str, Any] = {}
    for qid, text in beir.queries.items():
        per_mode = {}
        for mode in ("dense", "keyword"):
            hits = engine.search(text, principals=[], top_k=depth, mode=mode, rerank=False)
            per_mode[mode] = [(h.chunk_id, h.score, h.doc_id) for h in hits]
        runs[qid] = per_mode
    engine.close()
    return beir, runs


def score_set(beir: Any, runs: dict[str, Any]) -> list[dict[str, Any]]:
    doc_runs: dict[str, dict[str, dict[str, float]]] = {}
    ranked_lists: dict[str, dict[str, list[str]]] = {}
    for qid, per_mode in runs.items():
        doc_of = {cid: doc for mode in per_mode.values() for cid, _, doc in mode}
        candidates: dict[str, list[tuple[str, float]]] = {
            "dense": [(doc, s) for _, s, doc in per_mode["dense"]],
            "keyword": [(doc, s) for _, s, doc in per_mode["keyword"]],
        }
        chunk_runs = {m: [(cid, s) for cid, s, _ in hits] for m, hits in per_mode.items()}
        for name, (method, params) in VARIANTS.items():
            fused = fuse(chunk_runs, method, **params)
            candidates[name] = [(doc_of[item.id], item.score) for item in fused]
        for name, hits in candidates.items():
            ranked = list(chunk_hits_to_doc_run(hits))
            ranked_lists.setdefault(name, {})[qid] = ranked
            doc_runs.setdefault(name, {})[qid] = {d: float(len(ranked) - i) for i, d in enumerate(ranked)}
    means = {name: evaluate_run(beir.qrels, run) for name, run in doc_runs.items()}
    best_single = max(("dense", "keyword"), key=lambda m: means[m]["ndcg@10"])
    rows = []
    for name, metrics in means.items():
        wins = losses = 0
        for qid, relevant in beir.qrels.items():
            mine = first_relevant_rank(ranked_lists[name][qid], relevant)
            theirs = first_relevant_rank(ranked_lists[best_single][qid], relevant)
            wins += mine < theirs
            losses += mine > theirs
        rows.append({
            "set": beir.name, "variant": name, **{k: round(v, 4) for k, v in metrics.items()},
            "vs": best_single, "wins": wins, "losses": losses, "p": round(sign_test(wins, losses), 4),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path, help="BEIR folders")
    ap.add_argument("--config", help="engine config (default: the packaged one)")
    ap.add_argument("--max-queries", type=int)
    ap.add_argument("--json", dest="json_out", type=Path)
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for folder in args.sets:
        beir, runs = collect(folder, args.config, args.max_queries)
        set_rows = score_set(beir, runs)
        rows += set_rows
        print(f"\n{beir.name} ({len(beir.queries)} queries; wins/losses: first relevant document ranked "
              f"above/below {set_rows[0]['vs']})")
        print(f"{'variant':28} {'ndcg@10':>8} {'mrr@10':>7} {'R@10':>7} {'R@100':>7} {'wins':>5} {'losses':>6} {'p':>7}")
        for r in set_rows:
            print(f"{r['variant']:28} {r['ndcg@10']:8.4f} {r['mrr@10']:7.4f} {r['recall@10']:7.4f} "
                  f"{r['recall@100']:7.4f} {r['wins']:5d} {r['losses']:6d} {r['p']:7.4f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
