"""End to end over real HTTP: `cjkrag serve` on 127.0.0.1 with API keys holding several principals each.

The engine is real (Milvus Lite file, CJK analyzer); the FakeEmbedder keeps the run short.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

DOCS = [
    {"id": "support-1", "text": "密码重置：在登录页点击忘记密码，按邮件中的链接重新设置。", "acl": ["group:support"]},
    {"id": "support-2", "text": "パスワードの再設定はログイン画面から行います。", "acl": ["group:support"]},
    {"id": "hr-1", "text": "密码重置以外的人事制度：年假十五天。员工密码由人事部统一重置。", "acl": ["group:hr"]},
    {"id": "public-1", "text": "公开的帮助中心：如何联系我们。", "public": True},
    # support may read it, except the support bot's own user: narrowing to group:support must not lift that
    {"id": "support-internal", "text": "密码重置的内部流程：仅限人工客服。", "acl": ["group:support"],
     "deny": ["user:support-bot"]},
]
SUPPORT_SEES = {"support-1", "support-2", "public-1"}
HR_SEES = {"hr-1", "public-1", "support-internal"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cjkrag.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    from cjkrag.service.auth import hash_api_key

    tmp = Path(tmp_path_factory.mktemp("serve"))
    keys = {"support": "sk-support-" + "a" * 24, "hr": "sk-hr-" + "b" * 24}
    (tmp / "keys.yaml").write_text(json.dumps({"keys": [
        {"id": "support-bot", "hash": hash_api_key(keys["support"]),
         "principals": ["group:support", "user:support-bot"]},
        {"id": "hr-bot", "hash": hash_api_key(keys["hr"]), "principals": ["group:hr", "group:support", "user:hr-bot"]},
    ]}), encoding="utf-8")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(json.dumps({
        "data_dir": str(tmp / "data"), "embedding": {"model": "fake:64"},
        "service": {"api_keys_file": str(tmp / "keys.yaml")},
    }), encoding="utf-8")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in DOCS) + "\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ing = _cli("ingest", str(corpus), "--config", str(cfg), "--no-progress", env=env)
    assert ing.returncode == 0, ing.stderr

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cjkrag.cli", "serve", "--config", str(cfg), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError("server did not become ready")
        yield base, keys
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _search(base: str, key: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base}/v1/search", json=body, headers=headers, timeout=30)


def test_each_key_sees_exactly_its_documents(server: tuple[str, dict[str, str]]) -> None:
    base, keys = server
    hr_all = HR_SEES | {"support-1", "support-2"}  # hr-bot also holds group:support and is not denied
    for who, expected in (("support", SUPPORT_SEES), ("hr", hr_all)):
        for mode in ("hybrid", "dense"):  # every chunk has a vector: top 10 of 6 = all visible ones
            r = _search(base, keys[who], {"query": "密码重置", "top_k": 10, "mode": mode})
            assert r.status_code == 200, r.text
            assert {h["doc_id"] for h in r.json()["hits"]} == expected, (who, mode)


def test_body_principals_narrow_but_never_widen_or_lift_a_deny(server: tuple[str, dict[str, str]]) -> None:
    base, keys = server
    cases = [  # (key, body principals, exact visible set)
        ("support", ["group:hr", "group:support", "group:admin"], SUPPORT_SEES),  # hr/admin not held: ignored
        ("support", ["group:support"], SUPPORT_SEES),  # support-internal stays denied to user:support-bot
        ("support", ["group:nobody"], {"public-1"}),
        ("support", [], {"public-1"}),
        ("hr", ["group:hr"], {"hr-1", "public-1"}),
        ("hr", ["group:support"], {"support-1", "support-2", "support-internal", "public-1"}),
    ]
    for who, narrow, expected in cases:
        for mode in ("hybrid", "dense"):
            r = _search(base, keys[who], {"query": "密码重置", "top_k": 10, "mode": mode, "principals": narrow})
            assert r.status_code == 200, r.text
            assert {h["doc_id"] for h in r.json()["hits"]} == expected, (who, narrow, mode)


def test_no_or_wrong_key_is_401_without_details(server: tuple[str, dict[str, str]]) -> None:
    base, _ = server
    for key in (None, "sk-wrong"):
        r = _search(base, key, {"query": "密码重置"})
        assert r.status_code == 401
        assert "hr-1" not in r.text and "support" not in r.text
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def test_concurrent_clients_never_mix_principals(server: tuple[str, dict[str, str]]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    base, keys = server
    own = {"support": SUPPORT_SEES, "hr": HR_SEES | {"support-1", "support-2"}}
    jobs = [("support" if i % 2 else "hr", ("hybrid", "dense")[(i // 2) % 2]) for i in range(48)]

    def call(job: tuple[str, str]) -> tuple[str, set[str]]:
        who, mode = job
        r = _search(base, keys[who], {"query": "密码重置", "top_k": 10, "mode": mode})
        assert r.status_code == 200, r.text
        return who, {h["doc_id"] for h in r.json()["hits"]}

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(call, jobs))
    assert len(results) == 48
    for who, ids in results:
        assert ids == own[who], (who, ids)
