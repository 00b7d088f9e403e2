"""Turn the cross-lingual Tatoeba pairs of ``../shared/data/eval/tatoeba_laser`` into BEIR folders.

    python benchmarks/make_beir.py OUT_DIR            # OUT_DIR/tatoeba-{cmn,jpn,kor}-eng
    cjkrag eval OUT_DIR/tatoeba-cmn-eng --modes keyword,dense,hybrid

Each set: the 1,000 CJK sentences are the corpus, their 1,000 English translations the queries, and a
query's only relevant document is its own translation. Keyword search can barely work across scripts
here (only shared names and numbers match), dense retrieval can: the opposite of the lexical QA sets in
``../shared/data/beir``, so together they show what fusion does when one retriever is weak. The data stays
under its own license (Tatoeba, CC BY 2.0 FR; see the folder's SOURCE.txt); nothing is copied into the
repository.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "tatoeba_laser"
LANGS = ("cmn", "jpn", "kor")


def write_set(lang: str, out: Path) -> Path:
    cjk = (SRC / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()
    eng = (SRC / f"tatoeba.{lang}-eng.eng").read_text(encoding="utf-8").splitlines()
    if len(cjk) != len(eng):
        raise SystemExit(f"{lang}: {len(cjk)} CJK lines but {len(eng)} English lines; the pairs are misaligned")
    root = out / f"tatoeba-{lang}-eng"
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(cjk):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(eng):
            f.write(json.dumps({"_id": f"q{i}", "text": text}, ensure_ascii=False) + "\n")
    rows = ["query-id\tcorpus-id\tscore", *(f"q{i}\td{i}\t1" for i in range(len(eng)))]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write the BEIR sets into")
    args = ap.parse_args(argv)
    if not SRC.is_dir():
        raise SystemExit(f"{SRC} is absent: the Tatoeba pairs come with ../shared")
    for lang in LANGS:
        print(write_set(lang, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
