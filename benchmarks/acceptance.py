"""Issue 12's acceptance run: every mode, the bigram reference, every fusion and title variant, per set.

    python benchmarks/make_beir.py cjkrag-data/beir
    python benchmarks/acceptance.py ../shared/data/beir/xquad-zh-passage cjkrag-data/beir/tatoeba-cmn-eng
    python benchmarks/acceptance.py --report          # tables from the saved results

Per set, through the engine (Milvus Lite, the packaged defaults, its own eval store as ``cjkrag eval``):

* ``keyword``, ``dense`` and ``hybrid`` (the default fusion) over **every query**, top 100 chunks, as
  ``cjkrag eval`` runs them (hits whose document id is the query id dropped; a document ranks where its best
  chunk ranks). Passage and query vectors go through ``benchmarks/runs.py``'s per-text cache, so a corpus is
  embedded once however many variants and runs use it.
* latency p50/p95 per mode: ``Engine.search`` end to end *with* query embedding (the real embedder, no cache),
  on the first ``--latency-queries`` queries, the three modes interleaved per query;
* every fusion of ``benchmarks/fusion.py`` (RRF, min-max, z-score, DBSF, adaptive...) over the *same* dense and
  keyword chunk runs, with wins/losses and a sign test against the best single mode;
* the reference: character-bigram BM25 (bm25s, k1 = 1.5, b = 0.75) over title + text of each document;
* on sets with titles, the title variants (``chunking.context``: none / keywords / embedding / both): each
  store is ingested with its setting, the side it changes is searched, and hybrid is the engine's fusion of the
  variant's dense and keyword runs (the same pure function the engine calls).

Results: ``cjkrag-data/acceptance/<set>.json`` (and the raw runs, ``<set>.runs.json.gz``); ``--report``
collects them into ``benchmarks/results/eval.json`` and ``benchmarks/results/acceptance.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import runs as cache  # noqa: E402  benchmarks/runs.py

from cjkrag.config import ChunkingConfig  # noqa: E402
from cjkrag.pipeline.analyzer.normalize import detect_language  # noqa: E402
from cjkrag.pipeline.evaluation import (  # noqa: E402
    chunk_hits_to_doc_run,
    compare_modes,
    evaluate_run,
    latency_stats,
    load_beir,
    use_eval_store,
)
from cjkrag.pipeline.fusion import fuse, language_agreement  # noqa: E402

OUT = HERE.parent / "cjkrag-data" / "acceptance"
RESULTS = HERE / "results"
DEPTH = 100
CONTEXTS = ("none", "keywords", "embedding", "both")
FUSIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "weighted zscore": ("weighted", {"normalization": "zscore"}),
    "weighted minmax": ("weighted", {"normalization": "minmax"}),
    "rrf k=60": ("rrf", {"k": 60}),
    "rrf k=10": ("rrf", {"k": 10}),
    "dbsf": ("dbsf", {}),
    "adaptive fill@20": ("adaptive", {"signals": ("fill",)}),
    "adaptive fill@depth": ("adaptive", {"signals": ("fill",), "fill_at": None}),
    "adaptive fill@10": ("adaptive", {"signals": ("fill",), "fill_at": 10}),
    "adaptive standout": ("adaptive", {"signals": ("standout",)}),
    "adaptive fill+standout": ("adaptive", {"signals": ("fill", "standout")}),
    "adaptive (language)": ("adaptive", {"evidence": "language"}),
    "adaptive fill+language": ("adaptive", {"signals": ("fill",), "evidence": "language"}),
}
DEFAULT_CONTEXT = ChunkingConfig().context
ADAPTIVE = "adaptive (language)"  # what `fusion.method: adaptive` does with the default settings
FIXED = ("weighted zscore", "weighted minmax", "rrf k=60", "rrf k=10", "dbsf")


def _engine(context: str, name: str) -> Any:
    import cjkrag

    engine = cjkrag.open()
    engine.config.chunking.context = context  # type: ignore[assignment]
    suffix = "" if context == DEFAULT_CONTEXT else f"-ctx-{context}"
    use_eval_store(engine.config, name + suffix)
    engine._embedder = cache.CachedEmbedder(engine.embedder)
    return engine


def _runs(engine: Any, beir: Any, modes: tuple[str, ...]) -> dict[str, dict[str, list[tuple[str, float, str]]]]:
    """mode -> query id -> [(chunk id, score, doc id)] best first (top 100 chunks)."""
    engine.embedder.embed_queries(list(beir.queries.values()))  # batch-fill the query cache
    out: dict[str, dict[str, list[tuple[str, float, str]]]] = {m: {} for m in modes}
    for qid, text in beir.queries.items():
        for mode in modes:
            hits = engine.search(text, principals=[], top_k=DEPTH, mode=mode, rerank=False)
            out[mode][qid] = [(h.chunk_id, float(h.score), h.doc_id) for h in hits]
    return out


def _latency(engine: Any, beir: Any, n: int) -> dict[str, dict[str, float]]:
    real = engine.embedder.inner
    engine.pipeline.embedder = real  # the real query path: embedding included
    times: dict[str, list[float]] = {m: [] for m in ("keyword", "dense", "hybrid")}
    texts = list(beir.queries.values())[:n]
    for text in texts[:5]:
        engine.search(text, principals=[], top_k=DEPTH, mode="hybrid", rerank=False)  # warm
    for text in texts:
        for mode in times:
            t0 = time.perf_counter()
            engine.search(text, principals=[], top_k=DEPTH, mode=mode, rerank=False)
            times[mode].append((time.perf_counter() - t0) * 1000.0)
    engine.pipeline.embedder = engine.embedder
    return {m: {k: round(v, 1) for k, v in latency_stats(t).items()} for m, t in times.items()}


def _doc_lists(chunk_runs: dict[str, list[tuple[str, float, str]]] | dict[str, Any]) -> dict[str, list[str]]:
    return {qid: [d for d in chunk_hits_to_doc_run((doc, s) for _, s, doc in hits) if d != qid]
            for qid, hits in chunk_runs.items()}  # fmt: skip


def _score(beir: Any, ranked: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
    """Metrics per named ranking, and wins/losses vs the best of keyword / dense."""
    means = {}
    for name, lists in ranked.items():
        run = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in lists.items()}
        means[name] = {k: round(v, 4) for k, v in evaluate_run(beir.qrels, run).items()}
    versus = compare_modes(beir.qrels, ranked, {m: v["ndcg@10"] for m, v in means.items()})
    return {n: {**means[n], **{k: (round(v, 4) if k == "p" else v) for k, v in versus.get(n, {}).items()}}
            for n in means}  # fmt: skip


def _fused(dense: dict[str, list[Any]], keyword: dict[str, list[Any]], method: str,
           params: dict[str, Any], beir: Any = None) -> dict[str, list[tuple[str, float, str]]]:  # fmt: skip
    out = {}
    languages = _languages(beir) if params.get("evidence") == "language" else {}
    for qid in dense:
        doc_of = {c: d for run in (dense[qid], keyword[qid]) for c, _, d in run}
        chunk_runs = {"dense": [(c, s) for c, s, _ in dense[qid]], "keyword": [(c, s) for c, s, _ in keyword[qid]]}
        args = dict(params)
        if languages:  # what SearchPipeline computes from the hits' stored language
            query_language = detect_language(beir.queries[qid])
            hit_languages = [languages.get(d) for _, _, d in keyword[qid]]
            args["evidence"] = {"keyword": language_agreement(query_language, hit_languages)}
        fused = fuse(chunk_runs, method, **args)[:DEPTH]  # the engine returns the top DEPTH chunks
        out[qid] = [(item.id, item.score, doc_of[item.id]) for item in fused]
    return out


_LANG_CACHE: dict[str, dict[str, str]] = {}


def _languages(beir: Any) -> dict[str, str]:
    """Document id -> the language ingestion stores on its chunks (``with_language``)."""
    if beir.name not in _LANG_CACHE:
        _LANG_CACHE[beir.name] = {d.id: detect_language(f"{d.title}\n{d.text}") for d in beir.corpus.values()}
    return _LANG_CACHE[beir.name]


def bigram_reference(folder: Path, beir: Any) -> dict[str, float]:
    """Character-bigram BM25 (bm25s k1 = 1.5, b = 0.75) over each document's title + text, every query."""
    from analyzer import char_bigram_query, char_bigrams  # benchmarks/analyzer.py

    ids = list(beir.corpus)
    docs = [char_bigrams(f"{d.title}\n{d.text}".strip()) for d in beir.corpus.values()]
    qids = list(beir.queries)
    index = {d: i for i, d in enumerate(ids)}
    own = [index.get(q, -1) for q in qids]
    hits = cache.bm25_run(docs, [char_bigram_query(beir.queries[q]) for q in qids], own, k1=1.5, b=0.75)
    run = {q: {ids[d]: float(len(h) - i) for i, (d, _) in enumerate(h)} for q, h in zip(qids, hits, strict=True)}
    return {k: round(v, 4) for k, v in evaluate_run(beir.qrels, run).items()}


def measure(folder: Path, latency_queries: int, contexts: tuple[str, ...], max_queries: int | None = None,
            out: Path = OUT) -> dict[str, Any]:  # fmt: skip
    beir = load_beir(folder, max_queries=max_queries)
    name = folder.resolve().name
    has_titles = any(d.title for d in beir.corpus.values())
    t0 = time.perf_counter()
    result: dict[str, Any] = {"set": name, "queries": len(beir.queries), "docs": len(beir.corpus)}
    raw: dict[str, Any] = {}
    default = DEFAULT_CONTEXT
    for context in (default, *(c for c in contexts if c != default and has_titles)):
        if context == default:
            modes: tuple[str, ...] = ("keyword", "dense", "hybrid")
        else:  # only the side the setting changes and no earlier store had; the other side is shared
            modes = tuple(m for m in ("keyword", "dense") if f"{m}@{_side(m, context)}" not in raw)
            if not modes:
                continue
        engine = _engine(context, name)
        engine.drop()
        rep = engine.ingest(beir.documents())
        print(f"{name} [{context}]: {rep.summary()} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
        got = _runs(engine, beir, modes)
        for mode, per_query in got.items():
            raw[f"{mode}@{context}" if mode == "hybrid" else f"{mode}@{_side(mode, context)}"] = per_query
        if context == default:
            result["latency"] = _latency(engine, beir, latency_queries)
            result["chunks"] = engine.store.count()
        print(f"{name} [{context}]: searched {modes} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
        engine.close()
    result.update(score_runs(beir, raw, contexts, has_titles))
    result["folder"] = str(folder)
    result["bigram_bm25"] = bigram_reference(folder, beir)
    result["seconds"] = round(time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    with gzip.open(out / f"{name}.runs.json.gz", "wt", encoding="utf-8") as f:
        json.dump(raw, f)
    return result


def score_runs(beir: Any, raw: dict[str, Any], contexts: tuple[str, ...], has_titles: bool) -> dict[str, Any]:
    """Every fusion and title variant, scored from the saved chunk runs (no search)."""
    default = DEFAULT_CONTEXT
    result: dict[str, Any] = {}
    kw, dn = raw[f"keyword@{_side('keyword', default)}"], raw[f"dense@{_side('dense', default)}"]
    ranked = {"keyword": _doc_lists(kw), "dense": _doc_lists(dn), "hybrid": _doc_lists(raw[f"hybrid@{default}"])}
    for label, (method, params) in FUSIONS.items():
        ranked[label] = _doc_lists(_fused(dn, kw, method, params, beir))
    result["modes"] = _score(beir, ranked)
    result["hybrid_equals_offline"] = {n: ranked["hybrid"] == ranked[n] for n in ("weighted zscore", ADAPTIVE)}
    if has_titles and len(contexts) > 1:
        variants: dict[str, Any] = {}
        for context in contexts:
            k = raw.get(f"keyword@{_side('keyword', context)}")
            d = raw.get(f"dense@{_side('dense', context)}")
            if k is None or d is None:
                continue
            ranked_v = {"keyword": _doc_lists(k), "dense": _doc_lists(d),
                        "hybrid": _doc_lists(_fused(d, k, "weighted", {"normalization": "zscore"}))}  # fmt: skip
            variants[context] = _score(beir, ranked_v)
        result["title_variants"] = variants
    return result


def rescore(out: Path, contexts: tuple[str, ...], only: set[str] | None = None) -> None:
    """Recompute the fusions and title variants of the saved sets (``only``: these) from their saved runs
    (after changing :data:`FUSIONS` or the fusion code), keeping engine numbers, latency and bigram reference."""
    for path in sorted(out.glob("*.json")):
        if only and path.stem not in only:
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        with gzip.open(out / f"{result['set']}.runs.json.gz", "rt", encoding="utf-8") as f:
            raw = json.load(f)
        folder = Path(result.get("folder") or _folder_of(result["set"]))
        result["folder"] = str(folder)
        beir = load_beir(folder)
        has_titles = any(d.title for d in beir.corpus.values())
        engine_modes = {m: result["modes"][m] for m in ("keyword", "dense", "hybrid")}
        result.update(score_runs(beir, raw, contexts, has_titles))
        if result["modes"]["hybrid"] != engine_modes["hybrid"]:
            print(f"[note] {result['set']}: hybrid rescored from the saved runs differs", file=sys.stderr)
        path.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"rescored {result['set']}", file=sys.stderr)


def _folder_of(name: str) -> Path:
    shared = HERE.parents[1] / "shared" / "data" / "beir" / name
    return shared if shared.is_dir() else HERE.parent / "cjkrag-data" / "beir" / name


def _side(mode: str, context: str) -> str:
    """Which setting a run depends on: keyword runs see the title or not, dense runs embed it or not."""
    if mode == "keyword":
        return "title" if context in ("keywords", "both") else "body"
    return "title" if context in ("embedding", "both") else "body"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="*", type=Path, help="BEIR folders")
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--contexts", default=",".join(CONTEXTS), help="title variants on sets with titles")
    ap.add_argument("--max-queries", type=int, help="a smoke test: the first N queries only")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--rescore", action="store_true", help="recompute fusions of the saved SETS (default: all) "
                    "from their saved runs instead of measuring")
    ap.add_argument("--report", action="store_true", help="only collect saved results into tables")
    args = ap.parse_args(argv)
    contexts = tuple(c for c in args.contexts.split(",") if c)
    bad = [c for c in contexts if c not in CONTEXTS]
    if bad:
        ap.error(f"--contexts: unknown {bad}; choose from {', '.join(CONTEXTS)}")
    for folder in [] if args.rescore else args.sets:
        r = measure(folder, args.latency_queries, contexts, args.max_queries, args.out)
        print(json.dumps({"set": r["set"], "seconds": r["seconds"],
                          **{m: r["modes"][m]["ndcg@10"] for m in ("keyword", "dense", "hybrid", ADAPTIVE)},
                          "bigram": r["bigram_bm25"]["ndcg@10"]}))  # fmt: skip
    if args.rescore:  # the sets given, else every saved one
        rescore(args.out, contexts, {f.resolve().name for f in args.sets})
    if args.report:
        from acceptance_report import report  # benchmarks/acceptance_report.py

        report(args.out, RESULTS, hybrid=ADAPTIVE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
