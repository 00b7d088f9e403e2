"""BEIR-style retrieval evaluation, independent of the engine.

* :func:`load_beir` reads a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
* :func:`evaluate_run` computes nDCG@10, Recall@10, Recall@100 and MRR@10 with ``ir-measures``:
  nDCG/Recall with its pytrec_eval provider, MRR@10 with its ``msmarco`` provider, because pytrec_eval
  has no cutoff for reciprocal rank (asked for ``RR@10`` it silently returns the uncut RR).
  Every query of the qrels counts; a query the run lacks scores 0.
* :func:`run_eval` times one ``search(query, mode, k)`` call per query and mode and builds the report
  ``{"dataset", "queries", "modes": {mode: {"ndcg@10", "recall@10", "recall@100", "mrr@10",
  "p50_ms", "p95_ms"}}}`` that :func:`write_json`, :func:`format_table` and :func:`plot` consume; with a
  single-retriever mode (``keyword``, ``dense``) among the modes it adds ``"versus"``: per mode, the
  queries whose first relevant document ranks above (``wins``) or below (``losses``) the best single
  mode's, and the two-sided sign-test ``p`` (:func:`compare_modes`), so no loss hides in an average.
* A hit whose document id equals the query id is dropped (BEIR's ``ignore_identical_ids``): the pair sets
  of ``benchmarks/make_beir.py`` give a query the id of its own sentence, which stays in the corpus.

ir-measures and matplotlib are imported lazily (extra ``eval``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cjkrag.errors import InputError, missing
from cjkrag.types import Document, Hit

if TYPE_CHECKING:
    from cjkrag.config import Config

METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
SINGLE_MODES: tuple[str, ...] = ("keyword", "dense")
VERSUS_KEYS: tuple[str, ...] = ("vs", "wins", "losses", "p")
LATENCIES: tuple[str, ...] = ("p50_ms", "p95_ms")
MODE_KEYS: tuple[str, ...] = METRICS + LATENCIES
# our key -> ir-measures measure name
_MEASURES: dict[str, str] = {
    "ndcg@10": "nDCG@10",
    "recall@10": "R@10",
    "recall@100": "R@100",
    "mrr@10": "RR@10",
}

Qrels = dict[str, dict[str, int]]
Run = Mapping[str, Mapping[str, float]]
SearchFn = Callable[[str, str, int], Sequence[tuple[str, float]]]


@dataclass(frozen=True)
class BeirDoc:
    id: str
    title: str
    text: str


@dataclass
class BeirSet:
    """A loaded BEIR dataset: the whole corpus, the evaluated queries (file order) and their qrels."""

    name: str
    corpus: dict[str, BeirDoc]
    queries: dict[str, str]  # query id -> text, only queries with qrels, in queries.jsonl order
    qrels: Qrels  # query id -> {doc id: graded relevance}
    split: str = "test"
    extra: dict[str, Any] = field(default_factory=dict)

    def documents(self, *, public: bool = True, acl: Sequence[str] = ()) -> list[Document]:
        """The corpus as :class:`~cjkrag.types.Document` s (public by default: benchmarks have no ACL)."""
        return [
            Document(
                id=d.id, text=d.text, title=d.title, public=public, acl=tuple(acl), source=f"beir:{self.name}"
            )
            for d in self.corpus.values()
        ]


def _read_jsonl(path: Path, required: tuple[str, ...]) -> Iterable[dict[str, Any]]:
    if not path.is_file():
        raise InputError(
            f"{path}: missing; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
        )
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path}:{line_no}: not valid JSON ({exc.msg}); one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            absent = [key for key in required if key not in record]
            if absent:
                raise InputError(f"{path}:{line_no}: missing field(s) {', '.join(absent)}")
            yield record


def _read_qrels(path: Path) -> Qrels:
    if not path.is_file():
        qrels_dir = path.parent
        splits = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
        hint = (
            f"available splits: {', '.join(splits)}" if splits else f"no qrels/*.tsv under {qrels_dir.parent}"
        )
        raise InputError(f"{path}: missing ({hint}); pass split= one of them")
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            cells = line.rstrip("\r\n").split("\t")
            if line_no == 1:
                if [c.strip() for c in cells] != ["query-id", "corpus-id", "score"]:
                    raise InputError(
                        f"{path}:1: expected the header 'query-id<TAB>corpus-id<TAB>score', got {line.strip()!r}"
                    )
                continue
            if not line.strip():
                continue
            if len(cells) != 3:
                raise InputError(f"{path}:{line_no}: expected 3 tab-separated cells, got {len(cells)}")
            qid, doc_id, raw = (c.strip() for c in cells)
            try:
                score = int(float(raw))
            except ValueError:
                raise InputError(f"{path}:{line_no}: score {raw!r} is not a number") from None
            qrels.setdefault(qid, {})[doc_id] = score
    return qrels


def load_beir(directory: Path | str, split: str = "test", max_queries: int | None = None) -> BeirSet:
    """Load a BEIR dataset folder; keep queries that have qrels (the first ``max_queries`` in file order)."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory; point to an unpacked BEIR dataset (corpus.jsonl, ...)")
    if max_queries is not None and max_queries < 1:
        raise InputError(f"max_queries must be >= 1 (or None for all), got {max_queries}")
    qrels = _read_qrels(root / "qrels" / f"{split}.tsv")
    corpus: dict[str, BeirDoc] = {}
    for rec in _read_jsonl(root / "corpus.jsonl", ("_id", "text")):
        doc_id = str(rec["_id"])
        corpus[doc_id] = BeirDoc(id=doc_id, title=str(rec.get("title") or ""), text=str(rec["text"]))
    queries: dict[str, str] = {}
    for rec in _read_jsonl(root / "queries.jsonl", ("_id", "text")):
        qid = str(rec["_id"])
        if qid in qrels and qid not in queries:
            queries[qid] = str(rec["text"])
            if max_queries is not None and len(queries) >= max_queries:
                break
    if not queries:
        raise InputError(
            f"{root}: no query of queries.jsonl has judgments in qrels/{split}.tsv; check the split and the ids"
        )
    return BeirSet(
        name=root.name,
        corpus=corpus,
        queries=queries,
        qrels={qid: qrels[qid] for qid in queries},
        split=split,
    )


def use_eval_store(config: Config, dataset: str) -> str:
    """Point ``config`` at the evaluation store of ``dataset`` and return its collection name.

    The collection is ``eval_<dataset>``; with an embedded Milvus Lite file it also lives in a file of its own,
    ``<data_dir>/eval/<dataset>.db``, so an evaluation neither touches nor locks the user's store.
    """
    slug = "".join(ch if ch.isalnum() else "_" for ch in dataset.lower())
    config.collection = f"eval_{slug}"
    milvus = config.store.milvus
    if "://" not in milvus.uri:
        milvus.uri = f"eval/{slug}.db"  # relative: resolved against the data dir
    return config.collection


def _ir_measures() -> Any:
    try:
        import ir_measures
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise missing("eval", "ir-measures") from exc
    return ir_measures


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], run: Run) -> dict[str, float]:
    """Mean nDCG@10, Recall@10, Recall@100, MRR@10 (fractions) over every query of ``qrels``.

    ``run`` maps query id -> {doc id: score}; higher scores rank first (trec_eval breaks score ties by
    doc id, so give distinct scores when the order matters). Queries absent from ``run`` score 0.
    """
    if not qrels:
        raise InputError("evaluate_run: qrels is empty; nothing to evaluate")
    irm = _ir_measures()
    if not irm.pytrec_eval.is_available():  # pragma: no cover - depends on the installed extras
        raise missing("eval", "pytrec-eval-terrier")
    clean_qrels = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    clean_run: dict[str, dict[str, float]] = {q: {} for q in clean_qrels}
    for qid, docs in run.items():
        if str(qid) in clean_run:
            clean_run[str(qid)] = {str(d): float(s) for d, s in docs.items()}
    by_name = {key: irm.parse_measure(name) for key, name in _MEASURES.items()}
    trec = [by_name[k] for k in ("ndcg@10", "recall@10", "recall@100")]
    per_query: dict[str, dict[str, float]] = {key: {} for key in METRICS}
    key_of = {str(m): k for k, m in by_name.items()}
    metrics = list(irm.pytrec_eval.evaluator(trec, clean_qrels).iter_calc(clean_run))
    metrics += list(irm.msmarco.evaluator([by_name["mrr@10"]], clean_qrels).iter_calc(clean_run))
    for metric in metrics:
        per_query[key_of[str(metric.measure)]][metric.query_id] = float(metric.value)
    n = len(clean_qrels)
    return {key: math.fsum(per_query[key].get(q, 0.0) for q in clean_qrels) / n for key in METRICS}


def chunk_hits_to_doc_run(hits: Iterable[tuple[str, float] | Hit]) -> dict[str, float]:
    """Collapse chunk hits (best first) to documents: a document takes its best (first) chunk's score.

    The returned dict is in rank order (first occurrence). Accepts ``(doc_id, score)`` pairs or
    :class:`~cjkrag.types.Hit` objects.
    """
    run: dict[str, float] = {}
    for hit in hits:
        if isinstance(hit, Hit):
            doc_id, score = hit.doc_id, hit.score
        else:
            doc_id, score = hit
        key = str(doc_id)
        if key not in run:
            run[key] = float(score)
    return run


def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 of latencies in milliseconds (linear interpolation between closest ranks)."""
    if not ms:
        raise InputError("latency_stats: no latencies recorded (was any query run?)")
    values = sorted(float(x) for x in ms)

    def percentile(p: float) -> float:
        pos = (len(values) - 1) * p / 100.0
        lo, hi = math.floor(pos), math.ceil(pos)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return {"p50_ms": percentile(50), "p95_ms": percentile(95)}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (p = 0.5) p-value of ``wins`` vs ``losses`` (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def first_relevant_rank(ranked: Sequence[str], relevant: Mapping[str, int]) -> int:
    """1-based rank of the first relevant document of ``ranked`` (10**6 when none is there)."""
    for i, doc in enumerate(ranked, 1):
        if relevant.get(doc, 0) > 0:
            return i
    return 10**6


def compare_modes(
    qrels: Mapping[str, Mapping[str, int]],
    ranked: Mapping[str, Mapping[str, Sequence[str]]],
    ndcg: Mapping[str, float],
    singles: Sequence[str] = SINGLE_MODES,
) -> dict[str, dict[str, Any]]:
    """Per mode, wins / losses / sign-test p against the best single mode (by mean nDCG@10).

    ``ranked``: mode -> query id -> document ids best first. A win is a query whose first relevant document
    ranks higher than with the best single mode, a loss one where it ranks lower. Empty when no mode of
    ``singles`` was run.
    """
    present = [m for m in singles if m in ranked]
    if not present:
        return {}
    best = max(present, key=lambda m: ndcg[m])
    out: dict[str, dict[str, Any]] = {}
    for mode, lists in ranked.items():
        wins = losses = 0
        for qid, relevant in qrels.items():
            mine = first_relevant_rank(lists.get(qid, ()), relevant)
            theirs = first_relevant_rank(ranked[best].get(qid, ()), relevant)
            wins += mine < theirs
            losses += mine > theirs
        out[mode] = {"vs": best, "wins": wins, "losses": losses, "p": sign_test(wins, losses)}
    return out


def run_eval(
    beir: BeirSet,
    modes: list[str],
    search: SearchFn,
    progress: bool = True,
    k: int = 100,
) -> dict[str, Any]:
    """Run every query in every mode through ``search(query_text, mode, k)`` and score the results.

    ``search`` returns ``(doc_id, score)`` per chunk hit, best first; chunks are collapsed to documents
    (best chunk) and the engine's order is what gets evaluated (scores are replaced by rank-based ones,
    so score ties are not re-ordered by doc id). Latency is the wall time of each ``search`` call.
    ``k`` is passed to ``search`` as is: chunks collapse to at most ``k`` documents, so ask for more
    than 100 chunk hits when Recall@100 must see 100 distinct documents of a chunked corpus.
    """
    if not modes or len(set(modes)) != len(modes):
        raise InputError(f"run_eval: modes must be a non-empty list without repeats, got {modes!r}")
    report: dict[str, Any] = {"dataset": beir.name, "queries": len(beir.queries), "modes": {}}
    ranked_by_mode: dict[str, dict[str, list[str]]] = {}
    for mode in modes:
        run: dict[str, dict[str, float]] = {}
        latencies: list[float] = []
        items: Iterable[tuple[str, str]] = beir.queries.items()
        if progress:
            from rich.progress import track

            items = track(list(items), description=f"{beir.name} [{mode}]", transient=True)
        for qid, text in items:
            start = time.perf_counter()
            hits = search(text, mode, k)
            latencies.append((time.perf_counter() - start) * 1000.0)
            ranked = [d for d in chunk_hits_to_doc_run(hits) if d != qid]  # never the query itself
            ranked_by_mode.setdefault(mode, {})[qid] = ranked
            run[qid] = {doc_id: float(len(ranked) - i) for i, doc_id in enumerate(ranked)}
        report["modes"][mode] = {**evaluate_run(beir.qrels, run), **latency_stats(latencies)}
    ndcg = {mode: float(values["ndcg@10"]) for mode, values in report["modes"].items()}
    versus = compare_modes(beir.qrels, ranked_by_mode, ndcg)
    if versus:
        report["versus"] = versus
    return report


def _check_report(report: Mapping[str, Any]) -> None:
    if not isinstance(report.get("dataset"), str):
        raise InputError("report['dataset'] must be the dataset name (a string)")
    if not isinstance(report.get("queries"), int):
        raise InputError("report['queries'] must be the number of queries (an int)")
    modes = report.get("modes")
    if not isinstance(modes, Mapping) or not modes:
        raise InputError("report['modes'] must map each mode name to its metrics")
    for mode, values in modes.items():
        if not isinstance(values, Mapping) or set(values) != set(MODE_KEYS):
            got = sorted(values) if isinstance(values, Mapping) else type(values).__name__
            raise InputError(
                f"report['modes'][{mode!r}] must have exactly the keys {list(MODE_KEYS)}, got {got}"
            )


def write_json(report: Mapping[str, Any], path: Path | str) -> Path:
    """Write ``{"dataset", "queries", "modes": {mode: {metrics..., p50_ms, p95_ms}}}`` (4 decimals), and
    ``"versus": {mode: {"vs", "wins", "losses", "p"}}`` when the report has it."""
    _check_report(report)
    out: dict[str, Any] = {
        "dataset": report["dataset"],
        "queries": report["queries"],
        "modes": {
            mode: {key: round(float(values[key]), 4) for key in MODE_KEYS}
            for mode, values in report["modes"].items()
        },
    }
    if report.get("versus"):
        out["versus"] = {
            mode: {"vs": v["vs"], "wins": int(v["wins"]), "losses": int(v["losses"]), "p": round(float(v["p"]), 4)}
            for mode, v in report["versus"].items()
        }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table: one row per mode, metrics as fractions, latencies in ms."""
    _check_report(report)
    versus = report.get("versus") or {}
    header = ["mode", *MODE_KEYS, *(["vs best single", "wins", "losses", "p"] if versus else [])]
    rows = [
        [str(mode)]
        + [f"{float(values[key]):.4f}" for key in METRICS]
        + [f"{float(values[key]):.1f}" for key in LATENCIES]
        + (
            [str(versus[mode]["vs"]), str(versus[mode]["wins"]), str(versus[mode]["losses"]), f"{versus[mode]['p']:.4f}"]
            if mode in versus
            else ["", "", "", ""] if versus else []
        )
        for mode, values in report["modes"].items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    title = f"{report['dataset']} ({report['queries']} queries)"
    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *(line(r) for r in rows)])


def plot(report: Mapping[str, Any], path: Path | str) -> Path:
    """Bar chart of the four metrics per mode (and p50/p95 latency beside it), written as PNG."""
    _check_report(report)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise missing("eval", "matplotlib") from exc
    modes = list(report["modes"])
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_metrics, ax_latency = fig.subplots(1, 2, width_ratios=[2, 1])
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        values = report["modes"][mode]
        xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(METRICS))]
        bars = ax_metrics.bar(xs, [float(values[m]) for m in METRICS], width, label=mode)
        ax_metrics.bar_label(bars, fmt="%.3f", fontsize=7)
        xl = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(LATENCIES))]
        ax_latency.bar(xl, [float(values[m]) for m in LATENCIES], width, label=mode)
    ax_metrics.set_xticks(range(len(METRICS)), list(METRICS))
    ax_metrics.set_ylim(0, 1.05)
    ax_metrics.set_title(f"{report['dataset']}: retrieval quality ({report['queries']} queries)")
    ax_metrics.legend()
    ax_latency.set_xticks(range(len(LATENCIES)), list(LATENCIES))
    ax_latency.set_ylabel("ms")
    ax_latency.set_title("latency per query")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png", dpi=100)
    return target
