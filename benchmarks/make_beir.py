"""Turn the shared sentence sets of ``../shared/data/eval`` into BEIR folders (nothing is copied into the repo).

    python benchmarks/make_beir.py OUT_DIR            # every set below
    python benchmarks/make_beir.py OUT_DIR --sets lcqmc,pawsx-zh
    cjkrag eval OUT_DIR/tatoeba-cmn-eng --modes keyword,dense,hybrid

* ``tatoeba-{cmn,jpn,kor}-eng`` (cross-lingual): the 1,000 CJK sentences are the corpus, their 1,000 English
  translations the queries, and a query's only relevant document is its own translation. Keyword search can
  barely work across scripts (only shared names and numbers match), dense retrieval can: the opposite of the
  lexical QA sets in ``../shared/data/beir``, so together they show what fusion does when one retriever is weak.
* ``lcqmc``, ``bq``, ``pawsx-zh`` (question matching / paraphrase, Chinese): every distinct sentence of the
  split (valid) is a document ``s<i>``; the first sentence of each positive pair (label 1) is a query whose
  relevant documents are its positive partners. The query keeps the id of its own sentence, and the
  evaluation drops a hit whose document id equals the query id (BEIR's ``ignore_identical_ids``), so the
  query's own sentence is excluded while the whole split stays the corpus. PAWS-X pairs share most words
  (negatives are word-order swaps), LCQMC/BQ pairs are paraphrases: keyword search is weak where dense is not.

The data stays under its own license (see each folder's SOURCE.txt).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"
SRC = SHARED / "tatoeba_laser"
LANGS = ("cmn", "jpn", "kor")
PAIR_SETS = {"lcqmc": "lcqmc/LCQMC.valid.data", "bq": "bq/BQ.valid.data", "pawsx-zh": "pawsx_zh/PAWSX.valid.data"}
SETS = (*(f"tatoeba-{lang}-eng" for lang in LANGS), *PAIR_SETS)

Corpus = list[tuple[str, str]]  # (id, text)
Queries = list[tuple[str, str]]
Qrels = dict[str, list[str]]


def tatoeba(lang: str) -> tuple[Corpus, Queries, Qrels]:
    cjk = (SRC / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()
    eng = (SRC / f"tatoeba.{lang}-eng.eng").read_text(encoding="utf-8").splitlines()
    if len(cjk) != len(eng):
        raise SystemExit(f"{lang}: {len(cjk)} CJK lines but {len(eng)} English lines; the pairs are misaligned")
    corpus = [(f"d{i}", text) for i, text in enumerate(cjk)]
    queries = [(f"q{i}", text) for i, text in enumerate(eng)]
    return corpus, queries, {f"q{i}": [f"d{i}"] for i in range(len(eng))}


def pairs(name: str) -> tuple[Corpus, Queries, Qrels]:
    """Positive pairs as query -> sentence over the whole split (see the module docstring)."""
    path = SHARED / PAIR_SETS[name]
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        cells = line.split("\t")
        if len(cells) != 3 or cells[2].strip() not in ("0", "1"):
            raise SystemExit(f"{path}:{line_no}: expected sentence1<TAB>sentence2<TAB>0|1")
        rows.append((cells[0].strip(), cells[1].strip(), cells[2].strip() == "1"))
    ids: dict[str, str] = {}
    for s1, s2, _ in rows:
        for s in (s1, s2):
            ids.setdefault(s, f"s{len(ids)}")
    qrels: Qrels = {}
    for s1, s2, positive in rows:
        if positive and s1 != s2:
            relevant = qrels.setdefault(ids[s1], [])
            if ids[s2] not in relevant:
                relevant.append(ids[s2])
    text_of = {i: s for s, i in ids.items()}
    return [(i, s) for s, i in ids.items()], [(q, text_of[q]) for q in qrels], qrels


def build(name: str) -> tuple[Corpus, Queries, Qrels]:
    if name.startswith("tatoeba-"):
        return tatoeba(name.split("-")[1])
    if name in PAIR_SETS:
        return pairs(name)
    raise SystemExit(f"unknown set {name!r}; known: {', '.join(SETS)}")


def _write_jsonl(path: Path, records: Iterable[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_set(name: str, out: Path) -> Path:
    corpus, queries, qrels = build(name)
    root = out / name
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    _write_jsonl(root / "corpus.jsonl", ({"_id": i, "title": "", "text": t} for i, t in corpus))
    _write_jsonl(root / "queries.jsonl", ({"_id": i, "text": t} for i, t in queries))
    rows = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, docs in qrels.items() for d in docs)]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write the BEIR sets into")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma list of {', '.join(SETS)} (default: all)")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the sentence sets come with ../shared")
    for name in args.sets.split(","):
        print(write_set(name.strip(), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
