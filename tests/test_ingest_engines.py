"""`--engine ray` (a local Ray) and `ingest.workers: N` (chunk + analyze in worker processes) end with exactly
the store and manifest of the plain local engine.

Same folder, same config, two data dirs on real Milvus Lite: v1 is ingested, then v2 (changed texts, an
ACL change on every document, which reuses the stored vectors, removed and added files, --sync). After each
step the chunk ids, texts, keywords, ACLs, doc hashes, vectors and manifest entries of both runs must match;
a re-run of the Ray engine writes nothing. Skipped (with the reason) when Ray is not installed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cjkrag.cli import app
from cjkrag.ingest.report import EXIT_OK


def _need_ray() -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'cjkrag[ray]' (make test installs it)")


def _write(folder: Path, version: int) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "sub").mkdir(parents=True)
    for i in range(14):
        if version == 2 and i % 5 == 0:
            continue  # gone in v2: --sync deletes them
        reps = 2 + (i % 4) * 5
        body = "。".join(f"文档{i}第{j}段：{'报销' if i % 2 else '退货'}流程，版本{version if i % 3 == 0 else 1}"
                        for j in range(reps))  # fmt: skip
        (folder / ("sub" if i % 2 else "") / f"d{i:02d}.txt").write_text(body + "。", encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")  # reported as skipped by both engines
    (folder / "notes.xyz").write_text("?", encoding="utf-8")  # unsupported extension: skipped
    recs = [{"id": f"rec{j}", "text": f"记录{j}：发票报销需要附上原件。版本{version if j == 1 else 1}"} for j in range(3)]
    (folder / "sub" / "records.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n",
                                                  encoding="utf-8")  # fmt: skip
    if version == 2:
        (folder / "new.txt").write_text("新增：差旅补贴标准。パスワードの再設定。", encoding="utf-8")


def _state(cfg: Path) -> tuple[dict[str, tuple[Any, ...]], set[tuple[Any, ...]]]:
    import cjkrag

    eng = cjkrag.open(yaml.safe_load(cfg.read_text()))
    try:
        rows = eng.store.query(None, ["chunk_id", "doc_id", "doc_hash", "acl", "text", "keywords", "vector"],
                               limit=10_000)  # fmt: skip
        assert eng.store.count() == len(rows)
        chunks = {str(r["chunk_id"]): (r["doc_id"], r["doc_hash"], tuple(r["acl"]), r["text"], r["keywords"],
                                       np.asarray(r["vector"], dtype=np.float32)) for r in rows}  # fmt: skip
        manifest = {(e.doc_id, e.root, e.source, tuple(e.chunk_ids), tuple(e.pending_ids), e.content_hash,
                     e.access_hash, e.versions, e.complete) for e in eng.manifest.iter_all()}  # fmt: skip
        return chunks, manifest
    finally:
        eng.close()


def _same(a: Path, b: Path) -> None:
    (ca, ma), (cb, mb) = _state(a), _state(b)
    assert ca.keys() == cb.keys(), "different chunk ids"
    for cid, ra in ca.items():
        rb = cb[cid]
        assert ra[:5] == rb[:5], cid
        assert np.allclose(ra[5], rb[5], atol=1e-5), f"vector of {cid} differs"
    assert ma == mb, "manifests differ"


def _ingest(cfg: Path, src: Path, acl: str, engine: str, report: Path) -> dict[str, Any]:
    r = CliRunner().invoke(app, ["ingest", str(src), "-c", str(cfg), "--acl", acl, "--sync", "--yes",
                                 "--engine", engine, "--no-progress", "--json-report", str(report)])  # fmt: skip
    assert r.exit_code == EXIT_OK, r.output
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def _ingest_cfg(cfg: Path, src: Path, acl: str, report: Path) -> dict[str, Any]:
    r = CliRunner().invoke(app, ["ingest", str(src), "-c", str(cfg), "--acl", acl, "--sync", "--yes",
                                 "--no-progress", "--json-report", str(report)])  # fmt: skip
    assert r.exit_code == EXIT_OK, r.output
    data: dict[str, Any] = json.loads(report.read_text())
    return data


@pytest.mark.slow  # ~95 s on the loaded 2-core box: every Ray run starts a local Ray and its actor
def test_ray_engine_ends_like_the_local_engine(tmp_path: Path) -> None:
    _need_ray()
    src = tmp_path / "src"
    cfgs = {}
    for eng in ("local", "ray"):
        cfg = {"data_dir": str(tmp_path / eng), "embedding": {"model": "fake:64"},
               "chunking": {"max_tokens": 40, "overlap_tokens": 8},
               "ingest": {"batch_size": 8, "ray": {"batch_docs": 3}}}  # fmt: skip
        cfgs[eng] = tmp_path / f"{eng}.yaml"
        cfgs[eng].write_text(yaml.safe_dump(cfg, allow_unicode=True))

    _write(src, 1)
    reps = {e: _ingest(cfgs[e], src, "group:v1", e, tmp_path / f"{e}1.json") for e in cfgs}
    assert reps["ray"]["documents"] == reps["local"]["documents"] == 17
    assert reps["ray"]["chunks"] == reps["local"]["chunks"] and reps["ray"]["tokens"] == reps["local"]["tokens"]
    fails = {e: sorted((f["source"], f["kind"]) for f in reps[e]["failures"]) for e in reps}
    assert fails["ray"] == fails["local"] and len(fails["ray"]) == 2  # read by Ray tasks: same failures
    assert "chunk" in reps["ray"]["stages"]
    _same(cfgs["local"], cfgs["ray"])

    _write(src, 2)  # texts changed in some, ACL changed in all (vectors reused), 3 removed, 1 added
    reps = {e: _ingest(cfgs[e], src, "group:v2", e, tmp_path / f"{e}2.json") for e in cfgs}
    for key in ("documents", "chunks", "tokens", "reused", "deleted_chunks"):
        assert reps["ray"][key] == reps["local"][key], key
    assert reps["ray"]["reused"] > 0 and len(reps["ray"]["deleted_documents"]) == 3
    _same(cfgs["local"], cfgs["ray"])

    again = _ingest(cfgs["ray"], src, "group:v2", "ray", tmp_path / "ray3.json")
    assert again["documents"] == 0 and again["unchanged"] == 15


@pytest.mark.slow  # ~60 s here: each run spawns workers that load the tokenizer and the analyzer
def test_worker_processes_end_like_the_reading_thread(tmp_path: Path) -> None:
    """ingest.workers: 2 (chunk + analyze in a process pool) gives the store and manifest of workers: 0."""
    src = tmp_path / "src"
    cfgs = {}
    for name, workers in (("thread", 0), ("pool", 2)):
        cfg = {"data_dir": str(tmp_path / name), "embedding": {"model": "fake:64"},
               "chunking": {"max_tokens": 40, "overlap_tokens": 8}, "ingest": {"batch_size": 8, "workers": workers}}  # fmt: skip
        cfgs[name] = tmp_path / f"{name}.yaml"
        cfgs[name].write_text(yaml.safe_dump(cfg, allow_unicode=True))
    for version, acl in ((1, "group:v1"), (2, "group:v2")):
        _write(src, version)
        reps = {n: _ingest_cfg(cfgs[n], src, acl, tmp_path / f"{n}{version}.json") for n in cfgs}
        for key in ("documents", "chunks", "tokens", "reused", "deleted_chunks"):
            assert reps["pool"][key] == reps["thread"][key], key
        assert reps["pool"]["stages"]["chunk"] > 0
        _same(cfgs["thread"], cfgs["pool"])


def test_ray_missing_or_bad_options_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "d"), "embedding": {"model": "fake:64"}}))
    (tmp_path / "a.txt").write_text("退货。", encoding="utf-8")
    run = CliRunner().invoke
    r = run(app, ["ingest", str(tmp_path / "a.txt"), "-c", str(cfg), "--public", "--ray-address", "auto"])
    assert r.exit_code == 2 and "--engine ray" in r.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    r = run(app, ["ingest", str(tmp_path / "a.txt"), "-c", str(cfg), "--public", "--engine", "ray"])
    assert r.exit_code == 2 and "pip install 'cjkrag[ray]'" in r.output, r.output
