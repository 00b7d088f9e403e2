"""The CLI end to end on the packaged default: bundled multilingual-e5-small + Milvus Lite, samples/ corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def _cli(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CJKRAG_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "cjkrag.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=data)


def _access() -> dict[str, dict[str, Any]]:
    """doc_id -> access rule, from the sample records (files under samples/ get the --acl of the test)."""
    rules: dict[str, dict[str, Any]] = {}
    for line in (SAMPLES / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            rules[str(rec["id"])] = {"acl": rec.get("acl") or [], "public": bool(rec.get("public")),
                                     "deny": rec.get("deny") or []}
    return rules


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = Path(tmp_path_factory.mktemp("cli"))
    r = _cli("ingest", str(SAMPLES / "corpus.jsonl"), str(SAMPLES / "docs"), "--acl", "group:staff", "--no-progress", data=data)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "0 failed" in r.stdout, r.stdout
    return data


def test_query_json_never_returns_chunks_outside_the_acl(ingested: Path) -> None:
    rules = _access()
    for principal in ("group:x", "group:support", "group:hr"):
        r = _cli("query", "密码重置", "--principal", principal, "--json", "--top-k", "50", data=ingested)
        assert r.returncode == 0, r.stderr
        hits = json.loads(r.stdout)
        for h in hits:
            assert {"doc_id", "chunk_id", "text", "score", "start", "end", "metadata"} <= h.keys()
            rule = rules.get(h["doc_id"], {"acl": ["group:staff"], "public": False, "deny": []})
            allowed = (rule["public"] or principal in rule["acl"]) and principal not in rule["deny"]
            assert allowed, f"{h['doc_id']} returned to {principal}"
        if principal == "group:support":
            assert hits and any("密码" in h["text"] or "パスワード" in h["text"] for h in hits[:3])


def test_no_access_rule_stops_with_a_clear_error(tmp_path: Path) -> None:
    r = _cli("ingest", str(SAMPLES / "docs"), data=tmp_path)
    assert r.returncode == 2
    assert "--acl" in r.stderr and "--public" in r.stderr


def test_chinese_and_japanese_queries_rank_the_right_documents(ingested: Path) -> None:
    for q in ("如何重置密码", "パスワードを忘れた場合"):
        r = _cli("query", q, "-p", "group:support", "-p", "group:staff", "--json", "--top-k", "3", data=ingested)
        assert r.returncode == 0, r.stderr
        top = json.loads(r.stdout)
        assert top, q
        assert any(("密码" in h["text"]) or ("パスワード" in h["text"]) for h in top), (q, top)
