"""kill -9 a real `cjkrag ingest` subprocess at seeded random moments; the rerun must end exactly like a clean run.

Scenario: version 1 of a folder is ingested; version 2 changes texts, changes every document's ACL, removes
files and adds files; `cjkrag ingest v2 --acl ... --sync --yes` is killed (SIGKILL to its whole process
group, the embedded store server included) at >= 5 random points, then run to completion. The store (chunk
ids, doc hashes, ACLs, texts; no duplicates, nothing missing or stale) and the manifest must equal those of
a clean v1 -> v2 run in another data dir.

Backends: BACKENDS maps a name to the config overlay: Milvus Lite and embedded Qdrant (qdrant-edge-py), and
Milvus Lite written by `--engine ray` (skipped when Ray is not installed).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

BACKENDS: dict[str, dict[str, Any]] = {
    "milvus-lite": {},
    "qdrant-edge": {"store": {"backend": "qdrant", "qdrant": {"mode": "edge"}}},
    # --engine ray on a local Ray (its processes share the job's process group: the kill takes them too)
    "milvus-lite-ray": {"ingest": {"engine": "ray", "ray": {"batch_docs": 2}}},
}
KILLS = 6
SEED = 20261202

pytestmark = pytest.mark.slow


def _write_version(folder: Path, version: int) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i in range(24):
        if version == 2 and i % 6 == 0:
            continue  # removed in v2 (--sync deletes them)
        reps = 3 + (i % 5) * 6  # 1 to ~10 chunks
        body = "。".join(f"文档{i}第{j}段：{'报销' if i % 2 else '退货'}流程说明，版本{version if i % 3 == 0 else 1}" for j in range(reps))
        (folder / f"doc{i:02d}.txt").write_text(body + "。", encoding="utf-8")
    if version == 2:
        for i in range(3):
            (folder / f"new{i}.txt").write_text(f"新增文档{i}：差旅补贴标准。", encoding="utf-8")


def _cli(cfg: Path, src: Path, acl: str, *, sync: bool) -> list[str]:
    args = [sys.executable, "-m", "cjkrag.cli", "ingest", str(src), "-c", str(cfg), "--acl", acl, "--no-progress"]
    return args + (["--sync", "--yes"] if sync else [])


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, start_new_session=True)


def _run_killed(cmd: list[str], after_s: float) -> bool:
    """Run ``cmd`` and SIGKILL it after ``after_s``; True when it was still running (really killed)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        proc.wait(timeout=after_s)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and the embedded store's server: a crash
        proc.wait()
        time.sleep(0.5)
        return True


def _state(cfg: Path) -> tuple[set[tuple[Any, ...]], int, set[tuple[Any, ...]]]:
    import cjkrag

    eng = cjkrag.open(yaml.safe_load(cfg.read_text()))
    try:
        rows = eng.store.query(None, ["chunk_id", "doc_id", "doc_hash", "acl", "text"], limit=100_000)
        chunks = {(r["chunk_id"], r["doc_id"].rsplit("/", 1)[-1], r["doc_hash"], tuple(r["acl"]), r["text"]) for r in rows}
        manifest = {
            (e.doc_id.rsplit("/", 1)[-1], tuple(sorted(e.chunk_ids)), tuple(e.pending_ids), e.content_hash,
             e.access_hash, e.complete)
            for e in eng.manifest.iter_all()
        }  # fmt: skip
        return chunks, eng.store.count(), manifest
    finally:
        eng.close()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_kill_9_at_random_points_then_rerun_equals_a_clean_run(tmp_path: Path, backend: str) -> None:
    if backend.endswith("-ray"):
        pytest.importorskip("ray", reason="Ray is not installed: pip install 'cjkrag[ray]'")
    src = tmp_path / "src"
    cfgs = {}
    overlay = dict(BACKENDS[backend])
    ingest = {"batch_size": 4, **overlay.pop("ingest", {})}
    for name in ("clean", "killed"):
        cfg = {"data_dir": str(tmp_path / name), "embedding": {"model": "fake:64"},
               "chunking": {"max_tokens": 48, "overlap_tokens": 8}, "ingest": ingest, **overlay}
        cfgs[name] = tmp_path / f"{name}.yaml"
        cfgs[name].write_text(yaml.safe_dump(cfg, allow_unicode=True))

    # the clean reference: v1, then v2 with a new ACL and --sync
    _write_version(src, 1)
    for name in ("clean", "killed"):
        assert _run(_cli(cfgs[name], src, "group:v1", sync=True)).returncode == 0
    _write_version(src, 2)
    t0 = time.perf_counter()
    done = _run(_cli(cfgs["clean"], src, "group:v2", sync=True))
    duration = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr

    # seeded random points; a run that finished before its point (the load on the machine varies) does not
    # count, so draw again, up to 3x KILLS runs
    rng = random.Random(SEED)
    killed_runs = attempts = 0
    while killed_runs < KILLS and attempts < 3 * KILLS:
        attempts += 1
        killed_runs += _run_killed(_cli(cfgs["killed"], src, "group:v2", sync=True),
                                   rng.uniform(0.2 * duration, 0.9 * duration))  # fmt: skip
    assert killed_runs >= 5, f"only {killed_runs} of {attempts} runs were still running when killed"
    final = _run(_cli(cfgs["killed"], src, "group:v2", sync=True))
    assert final.returncode == 0, final.stderr

    clean, killed = _state(cfgs["clean"]), _state(cfgs["killed"])
    assert killed[1] == len(killed[0]), "duplicate chunk rows"
    assert killed[0] == clean[0], "store differs from a clean run (missing, stale or different chunks)"
    assert killed[2] == clean[2], "manifest differs from a clean run"
    assert {c[3] for c in killed[0]} == {("group:v2",)}  # no chunk kept the revoked ACL


@pytest.mark.parametrize("point", ["delete:marked", "delete:batch"])
def test_kill_9_inside_sync_deletions_then_rerun_equals_a_clean_sync(tmp_path: Path, point: str) -> None:
    """A SIGKILL at a fixed point of --sync's deletion loop (CJKRAG_TEST_CRASH_AT, ingest/job.py crash_point):
    after the documents are marked deleting in the manifest, and after the store deleted their chunks but
    before their manifest entries go. Re-running the same command must end exactly like a clean sync."""
    src = tmp_path / "src"
    cfgs = {}
    for name in ("clean", "killed"):
        cfg = {"data_dir": str(tmp_path / name), "embedding": {"model": "fake:64"},
               "chunking": {"max_tokens": 48, "overlap_tokens": 8}, "ingest": {"batch_size": 4}}  # fmt: skip
        cfgs[name] = tmp_path / f"{name}.yaml"
        cfgs[name].write_text(yaml.safe_dump(cfg, allow_unicode=True))
    _write_version(src, 1)
    for name in ("clean", "killed"):
        assert _run(_cli(cfgs[name], src, "group:v1", sync=True)).returncode == 0
    for f in sorted(src.glob("doc*.txt"))[::3]:  # only removals: the run's writes are nothing but deletions
        f.unlink()
    done = _run(_cli(cfgs["clean"], src, "group:v1", sync=True))
    assert done.returncode == 0 and "deleted: " in done.stdout, done.stderr

    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               CJKRAG_TEST_CRASH_AT=point)  # fmt: skip
    crashed = subprocess.run(_cli(cfgs["killed"], src, "group:v1", sync=True), capture_output=True, text=True,
                             env=env, timeout=600, start_new_session=True)  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-2000:])
    assert "deleted: " not in crashed.stdout
    time.sleep(0.5)
    half = _state(cfgs["killed"])
    assert any(not m[5] for m in half[2]), "the crash left no document marked deleting (wrong crash point?)"
    final = _run(_cli(cfgs["killed"], src, "group:v1", sync=True))
    assert final.returncode == 0, final.stderr
    assert "deleted: " in final.stdout  # the rerun finished the deletions

    clean, killed = _state(cfgs["clean"]), _state(cfgs["killed"])
    assert killed[1] == len(killed[0]), "duplicate chunk rows"
    assert killed[0] == clean[0], "store differs from a clean sync"
    assert killed[2] == clean[2], "manifest differs from a clean sync"
