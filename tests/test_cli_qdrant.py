"""``cjkrag ingest samples/ --acl group:staff --config configs/qdrant.yaml`` then ``cjkrag query`` on the same
config, as a user runs them from a fresh clone (Qdrant edge: qdrant-edge-py, in-process, under the data dir).

The fast test overlays only the fake embedder on the shipped config; the slow one runs the shipped config as
is (the bundled multilingual-e5-small)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
QDRANT_CONFIG = ROOT / "configs" / "qdrant.yaml"

pytest.importorskip("qdrant_edge")


def _cli(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CJKRAG_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cjkrag.cli", *args], capture_output=True, text=True, env=env, timeout=900, cwd=data
    )


def _ingest_and_query(config: Path, data: Path) -> None:
    r = _cli("ingest", str(SAMPLES), "--acl", "group:staff", "--config", str(config), "--no-progress", data=data)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "0 failed" in r.stdout, r.stdout
    assert (data / "qdrant" / "edge" / "cjkrag" / "cjkrag-collection.json").is_file()  # the edge shard
    assert not (data / "milvus.db").exists()  # nothing went to the default backend
    r = _cli("query", "送料", "--principal", "group:staff", "--json", "--config", str(config), data=data)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert any("送料" in h["text"] for h in hits[:3])
    public = set()
    for line in (SAMPLES / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip() and json.loads(line).get("public"):
            public.add(str(json.loads(line)["id"]))
    r = _cli("query", "送料", "--principal", "group:outsider", "--json", "--top-k", "50", "--config", str(config),
             data=data)  # fmt: skip
    assert r.returncode == 0, r.stderr
    outsider = {h["doc_id"] for h in json.loads(r.stdout)}
    assert outsider and outsider <= public  # files ingested with --acl group:staff stay hidden


def test_ingest_then_query_with_the_qdrant_config(tmp_path: Path) -> None:
    config = yaml.safe_load(QDRANT_CONFIG.read_text(encoding="utf-8"))
    config["embedding"] = {"model": "fake:64"}
    fast = tmp_path / "qdrant-fake.yaml"
    fast.write_text(yaml.safe_dump(config), encoding="utf-8")
    _ingest_and_query(fast, tmp_path)


@pytest.mark.slow
def test_shipped_qdrant_config_as_is(tmp_path: Path) -> None:
    _ingest_and_query(QDRANT_CONFIG, tmp_path)
