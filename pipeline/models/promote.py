"""Promotion: accept a gated candidate (or refuse it), copy it to a versioned folder, record why.

A candidate is promoted only with a gate report for exactly these weights (``candidate_key`` matches the
folder's current :func:`~cjkrag.pipeline.models.gate.model_key`) that passed, unless ``force`` (with a
reason). The model is copied to ``<data_dir>/models/<kind>-<key>`` so the path — and with it the
ingestion settings tag, which contains ``embedding.model`` — is new for new weights: re-running
``cjkrag ingest`` then re-embeds every document. Every decision (promoted or refused) is appended to
``<data_dir>/models/promotions.jsonl``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from cjkrag.errors import CjkragError, InputError
from cjkrag.pipeline.models.gate import model_key, read_gate


class GateRefused(CjkragError):
    """The candidate lost on the gate (or was never gated) and ``--force`` was not given."""


def _record(data_dir: Path, entry: dict[str, Any]) -> Path:
    log = data_dir / "models" / "promotions.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as h:
        h.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return log


def promote(candidate: str, data_dir: Path, *, gate_path: Path | None = None, force: bool = False,
            reason: str = "") -> dict[str, Any]:
    """Check the gate, copy the model, record the decision; returns the record (``target`` = new model path)."""
    src = Path(candidate).expanduser()
    if not src.is_dir():
        raise InputError(f"{candidate}: not a model folder; promote a folder written by `cjkrag finetune` or "
                         "`cjkrag models optimize`")
    gate_file = gate_path or src / "gate.json"
    key = model_key(str(src))
    entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "candidate": str(src.resolve()),
                             "candidate_key": key, "gate": str(gate_file), "forced": force, "reason": reason}
    problem = ""
    report: dict[str, Any] | None = None
    try:
        report = read_gate(gate_file)
    except InputError as exc:
        problem = str(exc)
    if report is not None:
        entry.update(kind=report.get("kind", "embedder"), base=report.get("base"), passed=report["passed"],
                     sets={r["set"]: {"base": r["base"]["ndcg@10"], "candidate": r["candidate"]["ndcg@10"],
                                      "wins": r["wins"], "losses": r["losses"], "p": r["p_value"]}
                           for r in report["sets"]})
        if report.get("candidate_key") != key:
            problem = (f"{gate_file} was written for other weights ({report.get('candidate_key')}, now {key}); "
                       "re-run `cjkrag models gate` on this candidate")
        elif not report["passed"]:
            lost = [f"{r['set']} ({r['delta_ndcg@10']:+.4f})" for r in report["sets"] if not r["passed"]]
            problem = (f"the candidate lost on the gate: nDCG@10 below base minus tolerance {report['tolerance']} on "
                       + ", ".join(lost))
    if problem and not force:
        entry.update(decision="refused", why=problem)
        _record(data_dir, entry)
        raise GateRefused(f"not promoted: {problem}. Use --force --reason TEXT to promote anyway (recorded).")
    if force and not reason.strip():
        raise InputError("--force needs --reason TEXT: the record says why a model that did not pass was promoted")
    kind = str(entry.get("kind") or "embedder")
    target = data_dir / "models" / f"{kind}-{key}"
    if not target.exists():
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoint-*"))
        tmp.rename(target)
    entry.update(decision="promoted", why=problem or "passed the gate", target=str(target.resolve()))
    entry["record"] = str(_record(data_dir, entry))
    return entry


def apply_hint(entry: dict[str, Any]) -> str:
    """The exact steps that make the promoted model live."""
    target = entry["target"]
    if entry.get("kind") == "reranker":
        return f"set in your config:\n  rerank:\n    model: {target}\nthe next search uses it (no re-ingestion)."
    return (f"set in your config:\n  embedding:\n    model: {target}\nthen re-embed: the model is part of the "
            "ingestion settings, so every document is re-embedded. To never serve a mix of old and new vectors, "
            "ingest into a NEW collection and switch to it when done:\n"
            "  cjkrag ingest YOUR_SOURCES --config CONFIG --collection NEW_NAME   (then set collection: NEW_NAME)\n"
            "or re-run `cjkrag ingest YOUR_SOURCES --config CONFIG` in place (searches see mixed vectors until it ends).")
