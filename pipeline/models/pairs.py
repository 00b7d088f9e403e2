"""Training pairs: PAIRS.jsonl, click logs, the shared labelled pair sets, and a held-out retrieval set.

* ``PAIRS.jsonl``: one ``{"query", "positive", "negatives"?}`` object per line (:func:`read_pairs`).
* click logs: ``{"query", "clicked_doc_id"}`` per line, resolved to document text by a lookup you pass
  (:func:`read_clicks`; the CLI resolves against the configured store's documents).
* labelled pair sets (``s1<TAB>s2<TAB>label``, as LCQMC / BQ / PAWS-X zh in ``../shared/data/eval``):
  :func:`convert_pair_set` writes ``train.jsonl`` and ``heldout.jsonl`` with a deterministic split by a hash
  of the query; no text of a held-out pair (query or positive) appears anywhere in the training part.
* :func:`pairs_to_beir` turns held-out pairs into a retrieval set (queries -> their positive, among every
  positive, negative and distractor text), the form the gate and ``cjkrag eval`` score.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cjkrag.errors import InputError
from cjkrag.pipeline.evaluation import BeirDoc, BeirSet


@dataclass(frozen=True)
class Pair:
    """A query, a relevant passage and optional known non-relevant passages."""

    query: str
    positive: str
    negatives: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"query": self.query, "positive": self.positive}
        if self.negatives:
            out["negatives"] = list(self.negatives)
        return out


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _records(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    if not path.is_file():
        raise InputError(f"{path}: no such file; give a JSONL file with one JSON object per line")
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not valid JSON ({exc.msg}); one JSON object per line") from None
            if not isinstance(rec, dict):
                raise InputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            yield where, rec


def read_pairs(path: Path | str) -> list[Pair]:
    """Read PAIRS.jsonl: ``query`` and ``positive`` strings, optional ``negatives`` (list of strings)."""
    pairs: list[Pair] = []
    for where, rec in _records(Path(path)):
        if "clicked_doc_id" in rec and "positive" not in rec:
            raise InputError(
                f"{where}: a click-log record (clicked_doc_id); pass the file with --clicks, not --pairs"
            )
        negs = rec.get("negatives") or []
        if not isinstance(negs, list):
            raise InputError(f"{where}: 'negatives' must be a list of strings, got {type(negs).__name__}")
        pairs.append(
            Pair(
                query=_text(rec.get("query"), where, "query"),
                positive=_text(rec.get("positive"), where, "positive"),
                negatives=tuple(_text(n, where, f"negatives[{i}]") for i, n in enumerate(negs)),
            )
        )
    if not pairs:
        raise InputError(f"{path}: no pairs; expected lines like {{\"query\": ..., \"positive\": ...}}")
    return pairs


def read_clicks(path: Path | str, resolve: Callable[[str], str | None]) -> tuple[list[Pair], list[str]]:
    """Read a click log (``query``, ``clicked_doc_id``) into pairs; returns (pairs, unresolved doc ids).

    ``resolve(doc_id)`` gives the document text or None when it is unknown (such clicks are skipped and listed).
    """
    pairs: list[Pair] = []
    unresolved: list[str] = []
    for where, rec in _records(Path(path)):
        query = _text(rec.get("query"), where, "query")
        doc_id = _text(str(rec.get("clicked_doc_id") or ""), where, "clicked_doc_id")
        text = resolve(doc_id)
        if text is None or not text.strip():
            unresolved.append(doc_id)
            continue
        pairs.append(Pair(query=query, positive=text.strip()))
    if not pairs:
        raise InputError(
            f"{path}: no click could be resolved to a stored document ({len(unresolved)} unknown doc ids, "
            f"e.g. {unresolved[:3]}); check the collection in the config"
        )
    return pairs, unresolved


def read_labelled_pairs(path: Path | str) -> list[tuple[str, str, int]]:
    """``s1<TAB>s2<TAB>label`` lines (label 0/1), as in the shared LCQMC / BQ / PAWS-X files."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".data", ".tsv", ".txt") and f.name != "SOURCE.txt")
        if len(files) != 1:
            raise InputError(f"{p}: expected exactly one .data/.tsv pair file in the folder, found {len(files)}")
        p = files[0]
    if not p.is_file():
        raise InputError(f"{p}: no such file; give a s1<TAB>s2<TAB>label file or its folder")
    rows: list[tuple[str, str, int]] = []
    with p.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) != 3 or cells[2].strip() not in ("0", "1"):
                raise InputError(f"{p}:{line_no}: expected s1<TAB>s2<TAB>0|1, got {line.strip()[:80]!r}")
            a, b = cells[0].strip(), cells[1].strip()
            if a and b:
                rows.append((a, b, int(cells[2])))
    if not rows:
        raise InputError(f"{p}: no pairs")
    return rows


def _bucket(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Split:
    train: list[Pair]
    heldout: list[Pair]
    #: texts of label-0 pairs on the held-out side: distractors in the held-out retrieval set
    distractors: list[str]


def split_labelled(
    rows: Sequence[tuple[str, str, int]],
    *,
    heldout_fraction: float = 0.2,
    seed: int = 13,
    max_train: int | None = None,
    max_heldout: int | None = None,
) -> Split:
    """Positive pairs -> train / held-out by a hash of the query (deterministic, independent of file order).

    Any training pair that shares a text (query or positive) with a held-out pair is dropped, so nothing
    the gate scores was trained on. Label-0 pairs whose texts are not in training become held-out distractors.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise InputError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    held: list[Pair] = []
    train: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for a, b, label in rows:
        if label != 1 or a == b or (a, b) in seen:
            continue
        seen.add((a, b))
        (held if _bucket(a, seed) < heldout_fraction else train).append(Pair(a, b))
    order = random.Random(seed)
    order.shuffle(held)
    order.shuffle(train)
    if max_heldout is not None:
        held = held[:max_heldout]
    held_texts = {t for p in held for t in (p.query, p.positive)}
    train = [p for p in train if p.query not in held_texts and p.positive not in held_texts]
    if max_train is not None:
        train = train[:max_train]
    train_texts = {t for p in train for t in (p.query, p.positive)}
    distractors: list[str] = []
    for a, b, label in rows:
        if label == 0 and _bucket(a, seed) < heldout_fraction:
            distractors.extend(t for t in (a, b) if t not in train_texts)
    distractors = list(dict.fromkeys(distractors))
    order.shuffle(distractors)
    if max_heldout is not None:
        distractors = distractors[: 2 * max_heldout]
    return Split(train=train, heldout=held, distractors=distractors)


def write_pairs(pairs: Iterable[Pair], path: Path | str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as handle:
        for p in pairs:
            handle.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
    return target


def doc_id(text: str) -> str:
    return "d" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def pairs_to_beir(pairs: Sequence[Pair], distractors: Sequence[str] = (), name: str = "pairs") -> BeirSet:
    """Held-out pairs as a retrieval set: each query's positive is relevant (grade 1) among all texts.

    The corpus is every positive, every listed negative and every distractor (deduplicated by text).
    """
    if not pairs:
        raise InputError(f"{name}: no pairs to build a retrieval set from")
    corpus: dict[str, BeirDoc] = {}
    for text in [t for p in pairs for t in (p.positive, *p.negatives)] + list(distractors):
        did = doc_id(text)
        corpus.setdefault(did, BeirDoc(id=did, title="", text=text))
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for p in pairs:
        qid = "q" + hashlib.sha1(p.query.encode("utf-8")).hexdigest()[:12]
        queries.setdefault(qid, p.query)
        qrels.setdefault(qid, {})[doc_id(p.positive)] = 1
    return BeirSet(name=name, corpus=corpus, queries=queries, qrels=qrels, split="heldout")


def write_beir(beir: BeirSet, directory: Path | str) -> Path:
    """Write a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) that ``cjkrag eval`` reads."""
    root = Path(directory)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as h:
        for d in beir.corpus.values():
            h.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as h:
        for qid, text in beir.queries.items():
            h.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (root / "qrels" / "test.tsv").open("w", encoding="utf-8") as h:
        h.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in beir.qrels.items():
            for did, grade in docs.items():
                h.write(f"{qid}\t{did}\t{grade}\n")
    return root


def convert_pair_set(
    source: Path | str,
    out_dir: Path | str,
    *,
    heldout_fraction: float = 0.2,
    seed: int = 13,
    max_train: int | None = None,
    max_heldout: int | None = None,
) -> dict[str, Any]:
    """Labelled pair file -> ``out_dir/train.jsonl``, ``heldout.jsonl``, ``heldout-distractors.jsonl`` and
    the held-out retrieval set as a BEIR folder ``out_dir/heldout-beir``; returns a summary."""
    src = Path(source)
    split = split_labelled(
        read_labelled_pairs(src), heldout_fraction=heldout_fraction, seed=seed,
        max_train=max_train, max_heldout=max_heldout,
    )  # fmt: skip
    out = Path(out_dir)
    name = src.name if src.is_dir() else src.parent.name
    write_pairs(split.train, out / "train.jsonl")
    write_pairs(split.heldout, out / "heldout.jsonl")
    with (out / "heldout-distractors.jsonl").open("w", encoding="utf-8") as h:
        for t in split.distractors:
            h.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    write_beir(pairs_to_beir(split.heldout, split.distractors, name=f"{name}-heldout"), out / "heldout-beir")
    summary = {
        "source": str(src), "seed": seed, "heldout_fraction": heldout_fraction,
        "train": len(split.train), "heldout": len(split.heldout), "distractors": len(split.distractors),
    }  # fmt: skip
    (out / "split.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def load_eval_set(path: Path | str, max_queries: int | None = None) -> BeirSet:
    """A gate evaluation set: a BEIR folder, or a PAIRS.jsonl file (its distractors file beside it is used)."""
    from cjkrag.pipeline.evaluation import load_beir

    p = Path(path)
    if p.is_dir():
        beir = load_beir(p, max_queries=max_queries)
        folder = p.resolve()
        # `models pairs` writes <set>/heldout-beir: name it by its set, or three gates print three "heldout-beir"
        beir.name = f"{folder.parent.name}/{folder.name}" if folder.name.startswith("heldout") else folder.name
        return beir
    pairs = read_pairs(p)
    if max_queries is not None:
        pairs = pairs[:max_queries]
    distractors: list[str] = []
    side = p.with_name(p.stem + "-distractors.jsonl")
    if side.is_file():
        distractors = [_text(rec.get("text"), where, "text") for where, rec in _records(side)]
    return pairs_to_beir(pairs, distractors, name=f"{p.parent.name}/{p.stem}")
