"""Tables and result files from ``benchmarks/acceptance.py``'s saved results (``cjkrag-data/acceptance``).

    python benchmarks/acceptance.py --report

Writes ``benchmarks/results/eval.json`` (the README's main table: keyword, dense and the default hybrid per set,
as ``cjkrag eval --json`` writes them, plus latency) and ``benchmarks/results/acceptance.json`` (every fusion,
the bigram reference, the title variants and the issue-12 checks per set), and prints the tables as Markdown.
The checks use a margin of 0.003 nDCG@10 (0.3 points on the 0-100 scale the issue speaks in); the previous
README numbers are ``benchmarks/results/eval-previous.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MARGIN = 0.003
ORDER = ("cmrc2018-passage", "cmrc2018-article", "jaquad-passage", "jaquad-article", "xquad-zh-passage",
         "xquad-zh-article", "tatoeba-cmn-eng", "tatoeba-jpn-eng", "tatoeba-kor-eng", "lcqmc", "bq", "pawsx-zh")  # fmt: skip
SINGLE = ("keyword", "dense")
FIXED = ("weighted zscore", "weighted minmax", "rrf k=60", "rrf k=10", "dbsf")
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
FUSION_COLUMNS = ("weighted zscore", "weighted minmax", "rrf k=60", "rrf k=10", "dbsf", "adaptive fill@20",
                  "adaptive fill@depth", "adaptive standout", "adaptive fill+language", "adaptive (language)")  # fmt: skip


def _load(folder: Path) -> list[dict[str, Any]]:
    found = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")}
    return [found[s] for s in (*ORDER, *sorted(set(found) - set(ORDER))) if s in found]


def checks(r: dict[str, Any], previous: dict[str, Any] | None, hybrid: str = "hybrid") -> dict[str, Any]:
    m = r["modes"]
    nd = {k: v["ndcg@10"] for k, v in m.items()}
    best_single = max(SINGLE, key=lambda k: nd[k])
    best_fixed = max(FIXED, key=lambda k: nd[k])
    out: dict[str, Any] = {
        "keyword_minus_bigram": round(nd["keyword"] - r["bigram_bm25"]["ndcg@10"], 4),
        "best_single": best_single,
        "hybrid_minus_best_single": round(nd[hybrid] - nd[best_single], 4),
        "best_fixed_fusion": best_fixed,
        "hybrid_minus_best_fixed": round(nd[hybrid] - nd[best_fixed], 4),
    }
    if previous is not None:
        out["minus_previous"] = {k: round(nd[k if k != "hybrid" else hybrid] - v["ndcg@10"], 4)
                                 for k, v in previous["modes"].items()}  # fmt: skip
    out["ok"] = (out["keyword_minus_bigram"] >= -MARGIN and out["hybrid_minus_best_single"] >= -MARGIN
                 and out["hybrid_minus_best_fixed"] >= -MARGIN
                 and all(v >= -MARGIN for v in out.get("minus_previous", {}).values()))  # fmt: skip
    return out


def report(folder: Path, results: Path, hybrid: str = "hybrid") -> None:
    rows = []
    for r in _load(folder):
        if hybrid not in r["modes"]:
            print(f"[skip] {r['set']}: no {hybrid!r} (rescore it: acceptance.py --rescore SET)", file=sys.stderr)
            continue
        rows.append(r)
    prev_path = results / "eval-previous.json"
    previous = json.loads(prev_path.read_text(encoding="utf-8")) if prev_path.exists() else {}
    evals: dict[str, Any] = {}
    for r in rows:
        modes = {}
        for mode in ("keyword", "dense", "hybrid"):
            src = r["modes"][hybrid if mode == "hybrid" else mode]
            modes[mode] = {**{k: src[k] for k in METRICS}, **r["latency"][mode]}
        evals[r["set"]] = {
            "dataset": r["set"], "queries": r["queries"], "modes": modes,
            "versus": {mode: {k: r["modes"][hybrid if mode == "hybrid" else mode][k] for k in ("vs", "wins", "losses", "p")}
                       for mode in modes},
        }  # fmt: skip
    (results / "eval.json").write_text(json.dumps(evals, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    full = [{**r, "checks": checks(r, previous.get(r["set"]), hybrid)} for r in rows]
    (results / "acceptance.json").write_text(json.dumps(full, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print("| set | queries | mode | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | p50 ms | p95 ms | vs best single (better/worse, p) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        e = evals[r["set"]]
        top = max(v["ndcg@10"] for v in e["modes"].values())
        for i, (mode, v) in enumerate(e["modes"].items()):
            nd = f"**{v['ndcg@10']:.4f}**" if v["ndcg@10"] == top else f"{v['ndcg@10']:.4f}"
            vs = e["versus"][mode]
            p = "p < 0.001" if vs["p"] < 0.001 else f"p = {vs['p']:.2g}"
            cmp = "—" if mode == vs["vs"] else f"{vs['wins']}/{vs['losses']}, {p}"
            head = f"| {r['set']} | {r['queries']} |" if i == 0 else "|  |  |"
            print(f"{head} {mode} | {nd} | {v['recall@10']:.4f} | {v['recall@100']:.4f} | {v['mrr@10']:.4f} | "
                  f"{v['p50_ms']:.0f} | {v['p95_ms']:.0f} | {cmp} |")
    print("\n| set | bigram BM25 | keyword | Δ | best single | hybrid | Δ | best fixed fusion | Δ | worst Δ vs previous README | ok |")
    print("|---|---:|---:|---:|---|---:|---:|---|---:|---:|---|")
    for r in full:
        c, nd = r["checks"], {k: v["ndcg@10"] for k, v in r["modes"].items()}
        worst = min(c.get("minus_previous", {}).items(), key=lambda kv: kv[1], default=None)
        w = f"{worst[1]:+.4f} ({worst[0]})" if worst else "— (not in README)"
        print(f"| {r['set']} | {r['bigram_bm25']['ndcg@10']:.4f} | {nd['keyword']:.4f} | {c['keyword_minus_bigram']:+.4f} | "
              f"{c['best_single']} {nd[c['best_single']]:.4f} | {nd[hybrid]:.4f} | {c['hybrid_minus_best_single']:+.4f} | "
              f"{c['best_fixed_fusion']} {nd[c['best_fixed_fusion']]:.4f} | {c['hybrid_minus_best_fixed']:+.4f} | {w} | "
              f"{'yes' if c['ok'] else '**no**'} |")
    names = [n for n in FUSION_COLUMNS if rows and n in rows[0]["modes"]]
    print("\n| set | best single | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for r in rows:
        m = r["modes"]
        best = max(SINGLE, key=lambda k: m[k]["ndcg@10"])
        top = max(m[n]["ndcg@10"] for n in names)
        cells = [(f"**{m[n]['ndcg@10']:.4f}**" if m[n]["ndcg@10"] == top else f"{m[n]['ndcg@10']:.4f}")
                 + f" ({m[n]['wins']}/{m[n]['losses']})" for n in names]  # fmt: skip
        print(f"| {r['set']} | {best} {m[best]['ndcg@10']:.4f} | " + " | ".join(cells) + " |")
    titled = [r for r in rows if r.get("title_variants")]
    if titled:
        variants = ("none", "keywords", "embedding", "both")
        print("\n| set | mode | " + " | ".join(variants) + " |")
        print("|---|---|" + "---:|" * len(variants))
        for r in titled:
            tv = r["title_variants"]
            for i, mode in enumerate(("keyword", "dense", "hybrid")):
                vals = [tv[v][mode]["ndcg@10"] if v in tv else None for v in variants]
                top = max(x for x in vals if x is not None)
                cells = ["—" if x is None else (f"**{x:.4f}**" if x == top else f"{x:.4f}") for x in vals]
                print(f"| {r['set'] if i == 0 else ''} | {mode} | " + " | ".join(cells) + " |")
