"""The quality gate: a candidate model against a base model on the same evaluation sets, side by side.

For each set (a BEIR folder, or held-out pairs turned into a retrieval set) the gate scores both models
and compares them per query: wins / losses / ties on nDCG@10 and a two-sided sign test over the
non-tied queries. A candidate **fails** a set when its nDCG@10 is below the base's minus ``tolerance``;
it passes the gate when it fails no set. The report is written as ``gate.json``.

Speed: the gate ranks dense retrieval directly with numpy (exact cosine over the whole set, no store,
no chunking: each corpus text is embedded whole, truncated at the model's limit), and caches every
embedding per model version under ``<cache>/embeddings`` so re-gating against the same base costs only
the candidate. A reranker candidate reranks the base embedder's dense top ``rerank_depth``. The store
path (chunking, hybrid fusion, ACL filters) stays ``cjkrag eval``.

Metrics come from :func:`cjkrag.pipeline.evaluation.evaluate_run`; the per-query values that the
win/loss count needs come from :func:`per_query_scores` (same ir-measures provider).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cjkrag.errors import InputError
from cjkrag.pipeline.evaluation import BeirSet, evaluate_run

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.01
GATE_VERSION = 1
#: files in a model folder that are about the model, not part of it
_NOT_MODEL = frozenset({"gate.json", "cjkrag-finetune.json", "throughput.json"})


# ---------------------------------------------------------------------------------------------- stats
def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value for ``wins`` vs ``losses`` (ties excluded); 1.0 when both are 0."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = math.fsum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def per_query_scores(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """nDCG@10 per query of ``qrels`` (0 for a query the run lacks), computed like ``evaluate_run``."""
    from cjkrag.pipeline.evaluation import _ir_measures

    irm = _ir_measures()
    clean_qrels = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    clean_run = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items() if str(q) in clean_qrels}
    out = dict.fromkeys(clean_qrels, 0.0)
    for m in irm.pytrec_eval.evaluator([irm.parse_measure("nDCG@10")], clean_qrels).iter_calc(clean_run):
        out[m.query_id] = float(m.value)
    return out


def compare(base: Mapping[str, float], cand: Mapping[str, float], eps: float = 1e-9) -> dict[str, Any]:
    """Per-query wins / losses / ties of ``cand`` over ``base`` and the sign-test p-value."""
    wins = sum(1 for q in base if cand.get(q, 0.0) > base[q] + eps)
    losses = sum(1 for q in base if cand.get(q, 0.0) < base[q] - eps)
    return {"wins": wins, "losses": losses, "ties": len(base) - wins - losses, "p_value": sign_test(wins, losses)}


# ---------------------------------------------------------------------------------------------- models
def model_key(ref: str) -> str:
    """A short key that changes whenever the model's weights change (for the embedding cache and records)."""
    if ref.startswith("bundled:"):
        from cjkrag.ingest.embedding.bundled import CONVERTER_VERSION

        return f"bundled-e5-small-c{CONVERTER_VERSION}"
    p = Path(ref).expanduser()
    if p.is_dir():  # content hash: a copy keeps its key, retraining in place changes it
        h = hashlib.sha256()
        for f in sorted(p.rglob("*")):
            rel = f.relative_to(p)
            if f.is_file() and f.name not in _NOT_MODEL and not rel.parts[0].startswith("checkpoint-"):
                h.update(str(rel).encode() + b"\x00")
                with f.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        h.update(block)
        return f"{p.name}-{h.hexdigest()[:12]}"
    return "hub-" + hashlib.sha256(ref.encode()).hexdigest()[:12]


def detect_kind(ref: str) -> str:
    """``reranker`` for a folder holding a sequence-classification model (a cross-encoder), else ``embedder``."""
    cfg = Path(ref).expanduser() / "config.json"
    if cfg.is_file():
        try:
            arch = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
        except (OSError, json.JSONDecodeError):
            arch = []
        if any("SequenceClassification" in str(a) for a in arch):
            return "reranker"
    return "embedder"


class CachedEncoder:
    """Embeds texts with one model, caching vectors on disk per (model version, role, text list)."""

    def __init__(self, ref: str, *, device: str = "auto", batch_size: int = 32, profile: str = "auto",
                 backend: str = "torch", cache_dir: Path | None = None, embedder: Any = None) -> None:
        from cjkrag.ingest.embedding.bundled import default_cache_dir

        self.ref = ref
        self.key = model_key(ref) + ("" if backend == "torch" else f"-{backend}")
        self.cache = (cache_dir or default_cache_dir()) / "embeddings" / self.key
        self._opts: dict[str, Any] = {"device": device, "batch_size": batch_size, "profile": profile, "backend": backend}
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = load_any_embedder(self.ref, **self._opts)
            self._embedder.warm_up()
        return self._embedder

    def encode(self, texts: Sequence[str], role: str) -> np.ndarray:
        digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:20]
        path = self.cache / f"{role}-{len(texts)}-{digest}.npy"
        if path.is_file():
            return np.load(path)
        fn = self.embedder.embed_queries if role == "queries" else self.embedder.embed_passages
        vecs = np.asarray(fn(list(texts)), dtype=np.float32)
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, vecs)
            tmp.replace(path)
        except OSError as exc:  # a read-only cache only costs speed
            log.warning("embedding cache %s not writable (%s)", self.cache, exc)
        return vecs


def load_any_embedder(ref: str, *, device: str = "auto", batch_size: int = 32, profile: str = "auto",
                      backend: str = "torch") -> Any:
    """The embedder for ``ref`` (``torch``: the normal loader; ``onnx``/``openvino``: an optimized build)."""
    if backend == "torch":
        from cjkrag.ingest.embedding.loader import load_embedder

        return load_embedder(ref, device=device, batch_size=batch_size, profile=profile)
    from cjkrag.pipeline.models.optimize import BackendEmbedder

    return BackendEmbedder(ref, backend=backend, batch_size=batch_size, profile=profile)


# ---------------------------------------------------------------------------------------------- runs
def dense_run(q: np.ndarray, d: np.ndarray, qids: Sequence[str], dids: Sequence[str], k: int = 100,
              exclude: Mapping[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Exact cosine top ``k`` per query (vectors are unit length); ``exclude`` maps a query to a doc id
    that must not be returned for it (the query's own text, when it also sits in the corpus)."""
    sims = q @ d.T
    k = min(k, d.shape[0])
    run: dict[str, dict[str, float]] = {}
    for i, qid in enumerate(qids):
        row = sims[i]
        top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
        top = top[np.argsort(-row[top], kind="stable")]
        banned = exclude.get(qid) if exclude else None
        run[qid] = {dids[j]: float(row[j]) for j in top if dids[j] != banned}
    return run


def _texts(beir: BeirSet) -> tuple[list[str], list[str], list[str], list[str], dict[str, str]]:
    qids = list(beir.queries)
    dids = list(beir.corpus)
    docs = [(d.title + "\n" + d.text).strip() if d.title else d.text for d in beir.corpus.values()]
    by_text = {t: did for did, t in zip(dids, docs, strict=True)}
    exclude = {qid: by_text[beir.queries[qid]] for qid in qids if beir.queries[qid] in by_text
               and by_text[beir.queries[qid]] not in beir.qrels.get(qid, {})}
    return qids, [beir.queries[q] for q in qids], dids, docs, exclude


def embedder_run(enc: CachedEncoder, beir: BeirSet, k: int = 100) -> dict[str, dict[str, float]]:
    qids, qtexts, dids, docs, exclude = _texts(beir)
    return dense_run(enc.encode(qtexts, "queries"), enc.encode(docs, "passages"), qids, dids, k, exclude)


def rerank_run(scorer: Callable[[str, list[str]], list[float]], first: Mapping[str, Mapping[str, float]],
               beir: BeirSet, depth: int, progress: bool = False) -> dict[str, dict[str, float]]:
    """Rerank the first ``depth`` documents of ``first`` with ``scorer(query, passages)``; the rest keep
    their order below them."""
    items: Iterable[tuple[str, Mapping[str, float]]] = list(first.items())
    if progress:
        from rich.progress import track

        items = track(items, description=f"{beir.name} [rerank]", transient=True)
    run: dict[str, dict[str, float]] = {}
    for qid, docs in items:
        ranked = sorted(docs, key=lambda d: -docs[d])
        head, tail = ranked[:depth], ranked[depth:]
        scores = scorer(beir.queries[qid], [beir.corpus[d].text for d in head]) if head else []
        order = [head[i] for i in sorted(range(len(head)), key=lambda i: -scores[i])] + tail
        run[qid] = {d: float(len(order) - i) for i, d in enumerate(order)}
    return run


# ---------------------------------------------------------------------------------------------- gate
@dataclass
class Contender:
    """One side of the gate: how to produce a run for a set."""

    label: str
    run: Callable[[BeirSet], dict[str, dict[str, float]]]


def gate_sets(base: Contender, candidate: Contender, sets: Sequence[BeirSet], *,
              tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Score both on every set; returns the gate report (``passed`` and per-set details)."""
    if tolerance < 0:
        raise InputError(f"--tolerance must be >= 0, got {tolerance}")
    if not sets:
        raise InputError("the gate needs at least one evaluation set (--eval)")
    rows = []
    for beir in sets:
        t0 = time.perf_counter()
        runs = {"base": base.run(beir), "candidate": candidate.run(beir)}
        metrics = {side: evaluate_run(beir.qrels, run) for side, run in runs.items()}
        per_q = {side: per_query_scores(beir.qrels, run) for side, run in runs.items()}
        delta = metrics["candidate"]["ndcg@10"] - metrics["base"]["ndcg@10"]
        rows.append({
            "set": beir.name, "queries": len(beir.queries), "docs": len(beir.corpus),
            "base": {k: round(v, 4) for k, v in metrics["base"].items()},
            "candidate": {k: round(v, 4) for k, v in metrics["candidate"].items()},
            "delta_ndcg@10": round(delta, 4),
            **compare(per_q["base"], per_q["candidate"]),
            "passed": bool(delta >= -tolerance),
            "seconds": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
    return {
        "gate_version": GATE_VERSION, "base": base.label, "candidate": candidate.label,
        "tolerance": tolerance, "metric": "ndcg@10", "passed": all(r["passed"] for r in rows), "sets": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def run_gate(candidate: str, sets: Sequence[BeirSet], *, base: str = "bundled:multilingual-e5-small",
             kind: str = "auto", embedder: str = "bundled:multilingual-e5-small", rerank_depth: int = 20,
             tolerance: float = DEFAULT_TOLERANCE, device: str = "auto", batch_size: int = 32,
             profile: str = "auto", candidate_backend: str = "torch", cache_dir: Path | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Gate ``candidate`` (an embedder, or a reranker: ``kind`` auto-detects) against ``base``.

    For a reranker, ``embedder`` gives the first-stage dense ranking and ``base`` is ``none`` (dense only) or
    another reranker; the candidate reranks the top ``rerank_depth``.
    """
    kind = detect_kind(candidate) if kind == "auto" else kind
    if kind not in ("embedder", "reranker"):
        raise InputError(f"--kind must be auto, embedder or reranker, got {kind!r}")
    if kind == "embedder":
        b = CachedEncoder(base, device=device, batch_size=batch_size, profile=profile, cache_dir=cache_dir)
        c = CachedEncoder(candidate, device=device, batch_size=batch_size, profile=profile,
                          backend=candidate_backend, cache_dir=cache_dir)
        report = gate_sets(Contender(base, lambda s: embedder_run(b, s)),
                           Contender(candidate, lambda s: embedder_run(c, s)), sets, tolerance=tolerance)
    else:
        first = CachedEncoder(embedder, device=device, batch_size=batch_size, profile=profile, cache_dir=cache_dir)
        cand_rr = _reranker(candidate, device)
        base_label = "none" if base in ("", "none") or detect_kind(base) != "reranker" else base
        base_rr = None if base_label == "none" else _reranker(base, device)

        def runner(rr: Any) -> Callable[[BeirSet], dict[str, dict[str, float]]]:
            def go(s: BeirSet) -> dict[str, dict[str, float]]:
                dense = embedder_run(first, s)
                return dense if rr is None else rerank_run(rr.score, dense, s, rerank_depth, progress)
            return go

        report = gate_sets(Contender(f"dense({embedder})" + (f"+{base_label}" if base_rr else ""), runner(base_rr)),
                           Contender(f"dense({embedder})+rerank({candidate})", runner(cand_rr)), sets,
                           tolerance=tolerance)
        report["rerank_depth"] = rerank_depth
    report.update(kind=kind, candidate_ref=candidate, candidate_key=model_key(candidate), base_ref=base,
                  candidate_backend=candidate_backend if kind == "embedder" else "torch")
    return report


def _reranker(ref: str, device: str) -> Any:
    from cjkrag.pipeline.rerank import CrossEncoderReranker

    rr = CrossEncoderReranker(ref, device=device, max_length=256, activation="identity")
    rr.warm_up()
    return rr


def write_gate(report: Mapping[str, Any], path: Path | str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def read_gate(path: Path | str) -> dict[str, Any]:
    p = Path(path)
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no gate report; run `cjkrag models gate CANDIDATE --eval SET` first") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc.msg}); re-run `cjkrag models gate`") from None
    if not isinstance(report, dict) or "sets" not in report or "passed" not in report:
        raise InputError(f"{p}: not a gate report (no 'sets'/'passed'); re-run `cjkrag models gate`")
    return report


def format_gate(report: Mapping[str, Any]) -> str:
    """The side-by-side table: per set base / candidate nDCG@10 and Recall@10, wins/losses/ties, p, verdict."""
    head = ["set", "queries", "base nDCG@10", "cand nDCG@10", "delta", "base R@10", "cand R@10",
            "win/loss/tie", "sign p", "verdict"]
    rows = [[
        r["set"], str(r["queries"]), f"{r['base']['ndcg@10']:.4f}", f"{r['candidate']['ndcg@10']:.4f}",
        f"{r['delta_ndcg@10']:+.4f}", f"{r['base']['recall@10']:.4f}", f"{r['candidate']['recall@10']:.4f}",
        f"{r['wins']}/{r['losses']}/{r['ties']}", f"{r['p_value']:.3g}", "pass" if r["passed"] else "FAIL",
    ] for r in report["sets"]]  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [head, *rows]]
    verdict = "PASSED" if report["passed"] else "REFUSED"
    title = f"gate: {report['candidate']} vs {report['base']} (tolerance {report['tolerance']}): {verdict}"
    return "\n".join([title, lines[0], "-" * len(lines[0]), *lines[1:]])

