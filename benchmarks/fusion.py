"""Fusion variants on the same dense and keyword runs: which way of combining them ranks best, per set.

    python benchmarks/fusion.py ../shared/data/beir/xquad-zh-article
    python benchmarks/fusion.py ../shared/data/beir/*-passage --max-queries 1000 --json fusion.json

For each BEIR set the corpus is ingested as ``cjkrag eval`` does (its own Milvus Lite file under
``<data_dir>/eval/``; unchanged documents are skipped, so a set evaluated before is not embedded again).
Each query runs once in ``dense`` and once in ``keyword`` mode (top 100 chunks each, the engine's
``retrieval.candidates``); every fusion variant then fuses those same two chunk runs with the pure
functions of ``cjkrag.pipeline.fusion``, chunks collapse to documents (a document ranks where its best
chunk ranks) and ir-measures scores the result. So the variants differ only in fusion, never in retrieval.

``--cached`` skips the engine: dense runs are exact top-100 searches over vectors that
``benchmarks/runs.py`` embedded once and cached, keyword runs are bm25s (k1=1.2, b=0.75: Milvus' defaults)
over the analyzer's terms of the body text (what the engine indexes), so every variant, the adaptive ones
included, can be compared on every set in seconds once the vectors exist:

    python benchmarks/runs.py embed ../shared/data/beir/xquad-zh-passage /tmp/beir/tatoeba-cmn-eng
    python benchmarks/fusion.py --cached ../shared/data/beir/xquad-zh-passage /tmp/beir/tatoeba-cmn-eng

Besides the means it counts, per query, whether the first relevant document ranks higher (win) or lower
(loss) than with the best single retriever, with a two-sided sign test: a small mean difference with a
large p-value is noise, not a loss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from cjkrag.pipeline.evaluation import (
    chunk_hits_to_doc_run,
    evaluate_run,
    first_relevant_rank,
    load_beir,
    sign_test,
    use_eval_store,
)
from cjkrag.pipeline.fusion import fuse

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "weighted zscore (default)": ("weighted", {"normalization": "zscore"}),
    "rrf k=60": ("rrf", {"k": 60}),
    "rrf k=60 kw 1 : dense 0.5": ("rrf", {"k": 60, "weights": {"keyword": 1.0, "dense": 0.5}}),
    "rrf k=60 kw 0.5 : dense 1": ("rrf", {"k": 60, "weights": {"keyword": 0.5, "dense": 1.0}}),
    "rrf k=10": ("rrf", {"k": 10}),
    "weighted minmax": ("weighted", {"normalization": "minmax"}),
    "dbsf": ("dbsf", {}),
    "adaptive fill@depth": ("adaptive", {"signals": ("fill",), "fill_at": None}),
    "adaptive fill@10": ("adaptive", {"signals": ("fill",), "fill_at": 10}),
    "adaptive fill@20": ("adaptive", {"signals": ("fill",)}),
    "adaptive fill@50": ("adaptive", {"signals": ("fill",), "fill_at": 50}),
    "adaptive fill+standout": ("adaptive", {"signals": ("fill", "standout"), "fill_at": None}),
    "adaptive standout": ("adaptive", {"signals": ("standout",)}),
    "adaptive gap": ("adaptive", {"signals": ("gap",)}),
    "adaptive fill+coverage": ("adaptive", {"signals": ("fill",), "fill_at": None, "evidence": "coverage"}),
    "adaptive coverage": ("adaptive", {"signals": (), "evidence": "coverage"}),
}


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


def collect_cached(folder: Path, max_queries: int | None) -> tuple[Any, dict[str, Any]] | None:
    """The same shape as :func:`collect`, from cached vectors and bm25s (documents are whole passages)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import runs as cache  # benchmarks/runs.py

    from cjkrag.pipeline.analyzer import get_analyzer

    beir = load_beir(folder, max_queries=max_queries)
    s = cache.load_set(folder)
    try:
        dense = cache.dense_run(s, cached_only=True)
    except cache.NotCached:
        print(f"[skip] {s.name}: vectors not cached (python benchmarks/runs.py embed {folder})", file=sys.stderr)
        return None
    analyzer = get_analyzer()
    doc_tokens = analyzer.analyze_many(s.texts)
    query_tokens = [analyzer.analyze_query(q) for q in s.queries]
    keyword = cache.bm25_run(doc_tokens, query_tokens, s.self_index(), k1=1.2, b=0.75)
    doc_sets = [set(t) for t in doc_tokens]
    out: dict[str, Any] = {}
    for i, qid in enumerate(s.qids):
        if qid not in beir.queries:
            continue
        terms = set(query_tokens[i])
        top = keyword[i][0][0] if keyword[i] else None
        coverage = len(terms & doc_sets[top]) / len(terms) if top is not None and terms else 0.0
        out[qid] = {
            "dense": [(s.ids[d], x, s.ids[d]) for d, x in dense[i]],
            "keyword": [(s.ids[d], x, s.ids[d]) for d, x in keyword[i]],
            "_evidence": {"coverage": {"keyword": coverage}},
        }
    return beir, out


def score_set(beir: Any, runs: dict[str, Any]) -> list[dict[str, Any]]:
    doc_runs: dict[str, dict[str, dict[str, float]]] = {}
    ranked_lists: dict[str, dict[str, list[str]]] = {}
    for qid, per_mode in runs.items():
        doc_of = {cid: doc for m in ("dense", "keyword") for cid, _, doc in per_mode[m]}
        candidates: dict[str, list[tuple[str, float]]] = {
            "dense": [(doc, s) for _, s, doc in per_mode["dense"]],
            "keyword": [(doc, s) for _, s, doc in per_mode["keyword"]],
        }
        evidence = per_mode.get("_evidence", {})
        chunk_runs = {m: [(cid, s) for cid, s, _ in per_mode[m]] for m in ("dense", "keyword")}
        for name, (method, params) in VARIANTS.items():
            if params.get("evidence") == "coverage":
                if "coverage" not in evidence:
                    continue  # only the cached runs know which query terms the keyword run matched
                params = {**params, "evidence": evidence["coverage"]}
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
        if qid_missing := [q for q in beir.qrels if q not in ranked_lists[name]]:
            raise SystemExit(f"{beir.name}: {len(qid_missing)} queries without a run")
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
    ap.add_argument("--cached", action="store_true", help="cached vectors + bm25s instead of the engine")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for folder in args.sets:
        if args.cached:
            got = collect_cached(folder, args.max_queries)
            if got is None:
                continue
            beir, runs = got
        else:
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
