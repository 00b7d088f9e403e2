"""Issue 8 (8b): a refused open of an embedded store must not break the holder's lock.

milvus-lite 2.5.1 unlinks its ``.milvus.db.lock`` in ``stop()`` even when the open that stops never got the
lock, so after one refused ``cjkrag query`` a second writer could open the same file. cjkrag's own lock is
taken before milvus-lite starts; these tests hold a store in a real second process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cjkrag.connectors.locking import StoreInUse, acquire_store_lock, lock_path_for, release_store_lock

HOLDER = """
import sys, time
from cjkrag.connectors.milvus.store import MilvusStore
store = MilvusStore(sys.argv[1], "c")
store.warm_up()
store.ensure_collection(8)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def held_store(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "milvus.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield db
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_second_process_is_refused_and_the_holder_keeps_its_locks(held_store: Path) -> None:
    from cjkrag.connectors.milvus.store import MilvusStore

    milvus_lock = held_store.with_name(f".{held_store.name}.lock")
    assert milvus_lock.exists()
    for _ in range(2):  # refused twice: the first refusal must not have unlocked anything
        store = MilvusStore(str(held_store), "c")
        with pytest.raises(StoreInUse, match=r"in use by process \d+"):
            store.warm_up()
        store.close()
    assert milvus_lock.exists(), "a refused open deleted milvus-lite's lock file"
    assert lock_path_for(held_store).exists()


def test_lock_is_released_when_the_holder_dies_by_kill_9(tmp_path: Path) -> None:
    from cjkrag.connectors.milvus.store import MilvusStore

    db = tmp_path / "milvus.db"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)  # milvus-lite's own server child notices its parent is gone
    store = MilvusStore(str(db), "c")
    try:
        store.warm_up()
        store.ensure_collection(8)
        assert store.count() == 0
    finally:
        store.close()


def _probe_lock(path: Path) -> subprocess.CompletedProcess[str]:
    """Try to take the lock of ``path`` from another process."""
    code = "import sys; from cjkrag.connectors.locking import acquire_store_lock as a; a(sys.argv[1], 'test store')"
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)


def test_same_process_shares_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    acquire_store_lock(path, "test store")
    acquire_store_lock(path, "test store")
    release_store_lock(path)
    probe = _probe_lock(path)
    assert probe.returncode != 0 and "in use by process" in probe.stderr
    release_store_lock(path)
    probe = _probe_lock(path)
    assert probe.returncode == 0, probe.stderr


def test_cli_query_while_served_fails_clearly_and_ingest_is_still_refused(held_store: Path) -> None:
    cfg = held_store.parent / "cfg.yaml"
    cfg.write_text(
        f"data_dir: {held_store.parent}\ncollection: c\nembedding: {{model: 'fake:8'}}\n", encoding="utf-8"
    )
    cli = [sys.executable, "-m", "cjkrag.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    q = subprocess.run([*cli, "query", "東京", "--principal", "group:x", "--config", str(cfg)],
                       capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert q.returncode != 0
    assert "in use by process" in q.stderr + q.stdout
    doc = held_store.parent / "a.txt"
    doc.write_text("東京は日本の首都です。", encoding="utf-8")
    i = subprocess.run([*cli, "ingest", str(doc), "--acl", "group:x", "--config", str(cfg)],
                       capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert i.returncode != 0, "a second writer opened a store that `cjkrag serve` holds"
    assert "in use by process" in i.stderr + i.stdout
