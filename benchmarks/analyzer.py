"""CJK analyzer benchmark: throughput (MB/s per language) and BM25 quality against naive bigrams.

    python benchmarks/analyzer.py                   # speed table (zh, ja, ko, mixed)
    python benchmarks/analyzer.py --quality         # + bm25s nDCG@10 / recall@10 per tokenization
    python benchmarks/analyzer.py --quality --queries 300 --json out.json

Text comes from ``../shared/data`` (cmrc2018 / jaquad passages, KorSTS sentences); when a file is absent
the benchmark falls back to generated text and says so. Speed is measured on UTF-8 bytes of input.
Quality sets (bm25s, Lucene BM25, k1=1.5, b=0.75 unless --bm25 says otherwise; the same queries for every tokenization; all queries by
default, ``--queries 300`` for a quick random sample):
cmrc2018-passage (zh) and jaquad-passage (ja) BEIR sets (questions written from the paragraph: lexical,
near the ceiling); STS pairs turned into paraphrase retrieval (sentence1 of a pair with score >= 4 is the
query, its sentence2s are relevant, every sentence2 of the set is a document): stsb-zh-pairs
(stsb_zh_text2vec), jsts-pairs (JGLUE JSTS), korsts-pairs (KorSTS dev+test).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cjkrag.pipeline.analyzer import CJKAnalyzer
from cjkrag.pipeline.analyzer.normalize import iter_runs, normalize

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
Tokenize = Callable[[str], list[str]]


# ----------------------------------------------------------------------------------- data
def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _korsts_rows(*names: str) -> list[list[str]]:
    rows: list[list[str]] = []
    for name in names:
        path = SHARED / "eval" / "korsts" / name
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(reader, None)
            rows.extend(r for r in reader if len(r) >= 7)
    return rows


def _generated(lang: str, n_bytes: int) -> list[str]:
    rng = random.Random(0)
    words = {
        "zh": ["中华", "人民", "共和国", "首都", "北京", "数据库", "检索", "系统", "我们", "使用", "模型", "训练", "城市", "历史", "文化", "经济", "发展"],
        "ja": ["東京", "は", "日本", "の", "首都", "です", "検索", "エンジン", "を", "使い", "まし", "た", "データ", "ベース", "歴史", "文化", "経済"],
        "ko": ["서울은", "한국의", "수도입니다", "검색", "엔진을", "사용했다", "데이터베이스", "역사", "문화", "경제", "발전", "도시"],
    }[lang]
    sep = " " if lang == "ko" else ""
    texts, total = [], 0
    while total < n_bytes:
        text = sep.join(rng.choice(words) for _ in range(60)) + "。"
        texts.append(text)
        total += len(text.encode())
    return texts


def speed_texts(lang: str, n_bytes: int) -> tuple[list[str], str]:
    """(texts, source) of about ``n_bytes`` UTF-8 bytes for one language."""
    sources = {
        "zh": SHARED / "beir" / "cmrc2018-passage" / "corpus.jsonl",
        "ja": SHARED / "beir" / "jaquad-passage" / "corpus.jsonl",
    }
    texts: list[str] = []
    source = "generated"
    if lang in sources and sources[lang].exists():
        texts, source = [d["text"] for d in _jsonl(sources[lang])], sources[lang].parent.name
    elif lang == "ko":
        rows = _korsts_rows("sts-train.tsv", "sts-dev.tsv", "sts-test.tsv")
        if rows:
            texts, source = [s for r in rows for s in (r[5], r[6])], "korsts"
    elif lang == "mixed":
        parts = [speed_texts(x, n_bytes // 3)[0] for x in ("zh", "ja", "ko")]
        texts = [t for group in zip(*parts, strict=False) for t in group]
        source = "zh+ja+ko interleaved"
    if not texts:
        return _generated(lang, n_bytes), "generated"
    out, total = [], 0
    while total < n_bytes:  # repeat the corpus if it is smaller than asked
        for t in texts:
            out.append(t)
            total += len(t.encode())
            if total >= n_bytes:
                break
    return out, source


# ----------------------------------------------------------------------------------- speed
def measure_speed(
    analyzer: CJKAnalyzer, lang: str, n_bytes: int, batch: int = 256, label: str | None = None
) -> dict[str, Any]:
    """MB/s of :meth:`analyze` (one text at a time) and :meth:`analyze_many` (batches), wall clock and
    process CPU time (CPU time is less disturbed by other processes; for the threaded Korean batch it
    sums all threads, so wall is the number that matters there)."""
    texts, source = speed_texts(lang, n_bytes)
    size = sum(len(t.encode()) for t in texts) / 1e6
    analyzer.warm_up()  # loads every dictionary outside the clock
    analyzer.analyze_many(texts[:8])
    t0, c0 = time.perf_counter(), time.process_time()
    n_tokens = sum(len(analyzer.analyze(t)) for t in texts)
    single, single_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(0, len(texts), batch):
        analyzer.analyze_many(texts[k : k + batch])
    batched, batched_cpu = time.perf_counter() - t0, time.process_time() - c0
    raw_cpu = _raw_library_cpu(lang, texts) if label is None else None
    return {
        "language": label or lang,
        "source": source,
        "mb": round(size, 2),
        "texts": len(texts),
        "tokens": n_tokens,
        "analyze_mb_s": round(size / single, 2),
        "analyze_cpu_mb_s": round(size / single_cpu, 2),
        "analyze_many_mb_s": round(size / batched, 2),
        "analyze_many_cpu_mb_s": round(size / batched_cpu, 2),
        "raw_library_cpu_mb_s": round(size / raw_cpu, 2) if raw_cpu else "",
    }


def _raw_library_cpu(lang: str, texts: list[str]) -> float | None:
    """CPU seconds of the bare library call on the same texts (rjieba search mode, SudachiPy mode C,
    Kiwi), for comparison with the whole analyzer (normalization, runs, filters, bigrams)."""
    if lang == "zh":
        import rjieba

        call: Callable[[str], object] = rjieba.cut_for_search
    elif lang == "ja":
        from sudachipy import Dictionary, SplitMode

        tokenizer = Dictionary(dict="core").tokenizer(mode=SplitMode.C)
        call = tokenizer.tokenize
        texts = [t for t in texts if len(t.encode()) < 49_000]
    elif lang == "ko":
        from kiwipiepy import Kiwi

        kiwi = Kiwi(num_workers=1)
        kiwi.tokenize("")
        call = kiwi.tokenize
    else:
        return None
    c0 = time.process_time()
    for t in texts:
        call(t)
    return time.process_time() - c0


# ----------------------------------------------------------------------------------- quality
def char_bigrams(text: str) -> list[str]:
    """The naive baseline (what Elasticsearch's ``cjk_bigram`` does): NFKC + lowercase, overlapping
    bigrams of every CJK / Hangul run (a lone character is kept as a unigram), other words as is."""
    out: list[str] = []
    for kind, _, run in iter_runs(normalize(text)):
        if kind == "word":
            out.append(run)
            continue
        for word in run.split():
            if len(word) == 1:
                out.append(word)
            else:
                out.extend(word[k : k + 2] for k in range(len(word) - 1))
    return out


def char_bigram_query(text: str) -> list[str]:
    """The baseline's query side: the same bigrams, deduplicated like :meth:`CJKAnalyzer.analyze_query`."""
    return list(dict.fromkeys(char_bigrams(text)))


BEIR_SETS = tuple(f"{n}-{k}" for n in ("cmrc2018", "jaquad", "xquad-zh") for k in ("passage", "article"))
PAIR_SETS = ("tatoeba-cmn-eng", "tatoeba-jpn-eng", "tatoeba-kor-eng", "lcqmc", "bq", "pawsx-zh")
STS_SETS = ("stsb-zh-pairs", "jsts-pairs", "korsts-pairs", "klue-sts-pairs")
QUALITY_SETS = (*BEIR_SETS, *PAIR_SETS, *STS_SETS)
LANGUAGE = {
    **dict.fromkeys(("cmrc2018", "xquad", "lcqmc", "bq", "pawsx", "stsb", "tatoeba-cmn"), "zh"),
    **dict.fromkeys(("jaquad", "jsts", "tatoeba-jpn"), "ja"),
    **dict.fromkeys(("korsts", "klue", "tatoeba-kor"), "ko"),
}


def language_of(set_name: str) -> str:
    for prefix, lang in sorted(LANGUAGE.items(), key=lambda kv: -len(kv[0])):
        if set_name.startswith(prefix):
            return lang
    raise ValueError(set_name)


QualitySet = tuple[list[str], list[str], list[set[int]], list[int]]


def quality_set(name: str) -> QualitySet | None:
    """(document texts, query texts, relevant doc indexes per query, the query's own doc index or -1)."""
    if name in BEIR_SETS:
        base = SHARED / "beir" / name
        if not (base / "corpus.jsonl").exists():
            return None
        docs = _jsonl(base / "corpus.jsonl")
        ids = [d["_id"] for d in docs]
        texts = [(d.get("title", "") + "\n" + d["text"]).strip() for d in docs]
        index = {d: i for i, d in enumerate(ids)}
        queries = {q["_id"]: q["text"] for q in _jsonl(base / "queries.jsonl")}
        rel: dict[str, set[int]] = {}
        with (base / "qrels" / "test.tsv").open(encoding="utf-8") as f:
            next(f)
            for line in f:
                qid, did, score = line.rstrip("\n").split("\t")
                if int(score) > 0 and did in index:
                    rel.setdefault(qid, set()).add(index[did])
        qids = [q for q in queries if q in rel]
        return texts, [queries[q] for q in qids], [rel[q] for q in qids], [-1] * len(qids)
    if name in PAIR_SETS:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from make_beir import build

        try:
            corpus, query_list, qrels = build(name)
        except (OSError, SystemExit):
            return None
        index = {d: i for i, (d, _) in enumerate(corpus)}
        return (
            [t for _, t in corpus],
            [t for _, t in query_list],
            [{index[d] for d in qrels[q]} for q, _ in query_list],
            [index.get(q, -1) for q, _ in query_list],
        )
    pairs = _sts_pairs(name)
    if pairs is None:
        return None
    texts = list(dict.fromkeys(s2 for _, s2, _ in pairs))
    index = {t: i for i, t in enumerate(texts)}
    rel_by_query: dict[str, set[int]] = {}
    for s1, s2, similarity in pairs:
        if similarity >= 4.0 and s1 != s2:
            rel_by_query.setdefault(s1, set()).add(index[s2])
    return texts, list(rel_by_query), list(rel_by_query.values()), [-1] * len(rel_by_query)


def _sts_pairs(name: str) -> list[tuple[str, str, float]] | None:
    """(sentence1, sentence2, score 0-5) of an STS set turned into paraphrase retrieval (score >= 4)."""
    if name == "korsts-pairs":
        rows = _korsts_rows("sts-dev.tsv", "sts-test.tsv")
        return [(r[5], r[6], float(r[4])) for r in rows] or None
    if name == "klue-sts-pairs":
        path = SHARED / "eval" / "klue_sts" / "klue-sts-v1.1_dev.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return [(r["sentence1"], r["sentence2"], float(r["labels"]["label"])) for r in data] or None
    if name == "stsb-zh-pairs":
        out: list[tuple[str, str, float]] = []
        for split in ("train", "valid", "test"):
            path = SHARED / "eval" / "stsb_zh_text2vec" / f"STS-B.{split}.data"
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    parts = line.split("\t")
                    if len(parts) == 3:
                        out.append((parts[0], parts[1], float(parts[2])))
        return out or None
    if name == "jsts-pairs":
        found: list[tuple[str, str, float]] = []
        for split in ("train", "valid", "test"):
            path = SHARED / "eval" / "jglue_jsts" / f"{split}-v1.3.json"
            if path.exists():
                found += [(r["sentence1"], r["sentence2"], float(r["label"])) for r in _jsonl(path)]
        return found or None
    raise ValueError(f"unknown quality set {name!r}")


def evaluate(
    doc_tokens: list[list[str]],
    query_tokens: list[list[str]],
    relevant: Sequence[set[int]],
    own: Sequence[int],
    k: int = 10,
    k1: float = 1.5,
    b: float = 0.75,
) -> dict[str, float]:
    """bm25s (Lucene BM25) nDCG@10 / Recall@10 over pre-tokenized documents and queries."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from runs import bm25_run  # benchmarks/runs.py

    ndcg = recall = 0.0
    for hits, rel in zip(bm25_run(doc_tokens, query_tokens, own, k1=k1, b=b, depth=k), relevant, strict=True):
        ranked = [d for d, _ in hits]
        dcg = sum(1.0 / math.log2(r + 2) for r, d in enumerate(ranked) if d in rel)
        ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(rel), k)))
        ndcg += dcg / ideal
        recall += len(rel.intersection(ranked)) / len(rel)
    n = len(query_tokens)
    return {"ndcg@10": round(ndcg / n, 4), "recall@10": round(recall / n, 4), "queries": n}


Tokenizer = tuple[Tokenize, Callable[[Sequence[str]], list[list[str]]]]


def tokenizations() -> dict[str, Tokenizer]:
    """name -> (query tokenizer, batched document tokenizer)."""
    variants = {
        "cjkrag": CJKAnalyzer(),
        "cjkrag-no-bigrams": CJKAnalyzer(bigrams=False),
        "cjkrag-plain-bigrams": CJKAnalyzer(bigram_prefix=""),
        "cjkrag-no-stopwords": CJKAnalyzer(stopwords=False),
        "cjkrag-ja-bigrams": CJKAnalyzer(bigram_languages=("zh", "ja", "ko")),
        "cjkrag-korean-bigrams": CJKAnalyzer(korean="bigrams"),
    }
    out: dict[str, Tokenizer] = {name: (a.analyze_query, a.analyze_many) for name, a in variants.items()}
    out["char-bigram"] = (char_bigram_query, lambda texts: [char_bigrams(t) for t in texts])
    return out


ONLY_FOR = {"cjkrag-ja-bigrams": {"ja"}, "cjkrag-korean-bigrams": {"ko"}}
BASELINE = ("char-bigram", 1.5, 0.75)  # the acceptance baseline: bm25s k1=1.5 b=0.75 over bigrams


def measure_quality(
    n_queries: int,
    seed: int = 0,
    sets: Sequence[str] = QUALITY_SETS,
    methods: Sequence[str] | None = None,
    params: Sequence[tuple[float, float]] = ((1.5, 0.75),),
) -> list[dict[str, Any]]:
    """Every tokenization at the first BM25 ``params``; ``cjkrag`` (and the baseline) at every one of them."""
    rows: list[dict[str, Any]] = []
    all_methods = tokenizations()
    chosen = {m: all_methods[m] for m in (methods or all_methods)}
    chosen.setdefault(BASELINE[0], all_methods[BASELINE[0]])
    for set_name in sets:
        loaded = quality_set(set_name)
        if loaded is None:
            print(f"[skip] {set_name}: not found under {SHARED}", file=sys.stderr)
            continue
        docs, queries, relevant, own = loaded
        lang = language_of(set_name)
        n = len(queries) if n_queries <= 0 else min(n_queries, len(queries))
        pick = sorted(random.Random(seed).sample(range(len(queries)), n))
        qs, rel, mine = [queries[i] for i in pick], [relevant[i] for i in pick], [own[i] for i in pick]
        for method, (query_tok, doc_tok_many) in chosen.items():
            if method in ONLY_FOR and lang not in ONLY_FOR[method]:
                continue  # the variant changes nothing on this set
            doc_tokens = doc_tok_many(docs)
            query_tokens = [query_tok(q) for q in qs]
            grid = params if method in ("cjkrag", BASELINE[0]) else params[:1]
            for k1, b in grid:
                scores = evaluate(doc_tokens, query_tokens, rel, mine, k1=k1, b=b)
                rows.append({"set": set_name, "language": lang, "tokenization": method, "k1": k1, "b": b,
                             "docs": len(docs), **scores})
                print(f"{set_name:18} {method:24} k1={k1} b={b} {scores}", file=sys.stderr)
    return rows


def summarize(rows: list[dict[str, Any]], margin: float = 0.003) -> list[dict[str, Any]]:
    """Per tokenization and BM25 setting: the worst difference to the baseline per language (nDCG@10)."""
    base = {r["set"]: r["ndcg@10"] for r in rows if (r["tokenization"], r["k1"], r["b"]) == BASELINE}
    out: dict[tuple[str, float, float, str], dict[str, Any]] = {}
    for r in rows:
        if r["set"] not in base or r["set"].startswith("tatoeba"):
            continue  # Tatoeba: English queries, keyword search is near zero for every tokenization
        key = (r["tokenization"], r["k1"], r["b"], r["language"])
        diff = r["ndcg@10"] - base[r["set"]]
        row = out.setdefault(key, {"tokenization": key[0], "k1": key[1], "b": key[2], "language": key[3],
                                   "sets": 0, "worst": 1.0, "mean": 0.0})
        row["sets"] += 1
        row["worst"] = round(min(row["worst"], diff), 4)
        row["mean"] += diff
    for row in out.values():
        row["mean"] = round(row["mean"] / row["sets"], 4)
        row["ok"] = row["worst"] >= -margin
    return sorted(out.values(), key=lambda r: (r["language"], -r["worst"]))


# ----------------------------------------------------------------------------------- main
def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)) for r in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=2.0, help="MB of text per language (default 2)")
    parser.add_argument("--languages", default="zh,ja,ko,mixed", help="comma list of zh,ja,ko,mixed")
    parser.add_argument("--quality", action="store_true", help="also run the bm25s quality comparison")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    parser.add_argument(
        "--queries",
        type=int,
        default=0,
        help="queries per quality set, a fixed random sample (default 0: all of them; 300-query samples "
        "are too noisy near cmrc2018's ceiling to rank tokenizations)",
    )
    parser.add_argument("--sets", help=f"comma list of quality sets (default: all of {', '.join(QUALITY_SETS)})")
    parser.add_argument("--methods", help="comma list of tokenizations (default: all)")
    parser.add_argument(
        "--bm25", default="1.5:0.75", help="k1:b settings, comma separated; the first applies to every "
        "tokenization, the others to cjkrag and the baseline only (e.g. 1.5:0.75,1.2:0.75)"
    )
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {"cpu_count": os.cpu_count()}
    analyzer = CJKAnalyzer()
    result["analyzer"] = analyzer.fingerprint
    if not args.no_speed:
        n_bytes = int(args.mb * 1e6)
        speed = []
        for lang in args.languages.split(","):
            speed.append(measure_speed(analyzer, lang, n_bytes))
            if lang == "ko":
                fast = CJKAnalyzer(korean="bigrams")
                speed.append(measure_speed(fast, lang, n_bytes, label="ko (korean=bigrams)"))
        result["speed"] = speed
        result["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        columns = ["language", "source", "mb", "texts", "tokens", "analyze_mb_s", "analyze_cpu_mb_s"]
        print(_table(speed, [*columns, "analyze_many_mb_s", "analyze_many_cpu_mb_s", "raw_library_cpu_mb_s"]))
        print(f"(cpu_count={os.cpu_count()}, load average {result['load_average']})")
    if args.quality:
        params = [tuple(float(x) for x in p.split(":")) for p in args.bm25.split(",")]
        quality = measure_quality(
            args.queries,
            sets=args.sets.split(",") if args.sets else QUALITY_SETS,
            methods=args.methods.split(",") if args.methods else None,
            params=params,  # type: ignore[arg-type]
        )
        result["quality"] = quality
        result["summary"] = summarize(quality)
        print()
        print(_table(quality, ["set", "tokenization", "k1", "b", "docs", "queries", "ndcg@10", "recall@10"]))
        print()
        print(_table(result["summary"], ["language", "tokenization", "k1", "b", "sets", "worst", "mean", "ok"]))
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
