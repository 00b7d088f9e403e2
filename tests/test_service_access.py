"""The HTTP service over the REAL engine (Milvus Lite file, CJK analyzer, fake:64 embedder), in process.

What a caller controls here is the bearer token, the body's ``principals`` (narrowing), ``filters``, the
query, ``top_k`` and ``mode``; every test below checks an exact outcome, never "200 or 4xx".
"""

from __future__ import annotations

import json
import logging
import random
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from cjkrag.connectors.milvus import store as store_mod
from cjkrag.service import ServiceSettings, create_app, hash_api_key
from tests.conftest import make_engine

JOSE_NFC = "user:jos\u00e9"
JOSE_NFD = unicodedata.normalize("NFD", JOSE_NFC)
assert JOSE_NFD != JOSE_NFC

KEYS = {  # key -> principals (several each)
    "cjk_alice0001_secret": ["user:alice", "group:eng"],
    "cjk_bob000001_secret": ["user:bob", "group:eng", "group:sales"],
    "cjk_jose00001_secret": [JOSE_NFC, "group:eng"],
    "cjk_carol0001_secret": ["user:carol", "group:hr"],
}
ALICE, BOB, JOSE, CAROL = KEYS

WORDS = ["密码", "重置", "退款", "物流", "発票", "東京", "検索", "予約", "수도", "환불"]
DOCS: list[dict[str, Any]] = [
    # acl group:eng, but alice is denied: narrowing to group:eng must not reveal it
    {"id": "eng-secret", "text": "密码重置 工程部门的密钥轮换。", "acl": ["group:eng"], "deny": ["user:alice"]},
    {"id": "eng-doc", "text": "密码重置 工程部门的值班表。", "acl": ["group:eng"]},
    {"id": "sales-doc", "text": "密码重置 销售部门的报价单。", "acl": ["group:sales"]},
    {"id": "hr-doc", "text": "密码重置 人事部门的年假制度。", "acl": ["group:hr"], "metadata": {"rank": 1}},
    {"id": "public-doc", "text": "密码重置 公开的帮助中心。", "public": True},
    {"id": "public-no-alice", "text": "密码重置 公开但不给 alice。", "public": True, "deny": ["user:alice"]},
    # deny written in NFD and with a trailing space: must deny the NFC principal jose holds
    {"id": "not-for-jose", "text": "密码重置 不给 josé 的文档。", "acl": ["group:eng"], "deny": [JOSE_NFD + " "]},
]
# invisible to every key: "ghost" chunks with metadata.rank, to probe the NOT-resolution limits
GHOSTS = [{"id": f"ghost-{i}", "text": f"密码重置 幽灵 {i}。", "acl": ["group:ghost"], "metadata": {"rank": i}}
          for i in range(8)]  # fmt: skip


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    tmp = Path(tmp_path_factory.mktemp("svc_access"))
    engine = make_engine(tmp / "data", retrieval={"candidates": 50})
    report = engine.ingest([str(_jsonl(tmp / "docs.jsonl", DOCS + GHOSTS))])  # through the JSONL reader
    assert report.documents == len(DOCS) + len(GHOSTS) and not report.failures, report.failures
    keys = tmp / "keys.yaml"
    entries = [{"id": f"key-{i}", "hash": hash_api_key(k), "principals": p} for i, (k, p) in enumerate(KEYS.items())]
    keys.write_text(yaml.safe_dump({"keys": entries}, allow_unicode=True), encoding="utf-8")
    settings = ServiceSettings(api_keys_file=keys, max_top_k=100, max_request_bytes=65536)
    with TestClient(create_app(engine, settings)) as client:
        yield client, engine
    engine.close()


def search(client: TestClient, key: str, **body: Any) -> Any:
    return client.post("/v1/search", json={"query": "密码重置", "top_k": 50, **body},
                       headers={"Authorization": f"Bearer {key}"})  # fmt: skip


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {h["doc_id"] for h in response.json()["hits"]}


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_narrowing_never_lifts_a_deny(world: tuple[TestClient, Any], mode: str) -> None:
    client, _ = world
    alice = {"eng-doc", "not-for-jose", "public-doc"}  # not eng-secret, not public-no-alice: denied to alice
    assert ids(search(client, ALICE, mode=mode)) == alice
    assert ids(search(client, ALICE, mode=mode, principals=["group:eng"])) == alice
    assert ids(search(client, ALICE, mode=mode, principals=["group:eng", "group:sales"])) == alice
    assert ids(search(client, ALICE, mode=mode, principals=[])) == {"public-doc"}
    assert ids(search(client, ALICE, mode=mode, principals=["user:alice"])) == {"public-doc"}
    bob = {"eng-secret", "eng-doc", "not-for-jose", "sales-doc", "public-doc", "public-no-alice"}
    assert ids(search(client, BOB, mode=mode)) == bob
    assert ids(search(client, BOB, mode=mode, principals=["group:sales"])) == {
        "sales-doc", "public-doc", "public-no-alice"}  # fmt: skip
    assert ids(search(client, BOB, mode=mode, principals=["group:hr"])) == {"public-doc", "public-no-alice"}


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_nfd_deny_with_trailing_space_denies_the_nfc_principal(world: tuple[TestClient, Any], mode: str) -> None:
    client, engine = world
    assert ids(search(client, JOSE, mode=mode)) == {"eng-secret", "eng-doc", "public-doc", "public-no-alice"}
    # also when the caller's principal arrives in NFD / padded (CLI, host app)
    for who in ([JOSE_NFD, "group:eng"], [f" {JOSE_NFC}\u3000", "group:eng"]):
        got = {h.doc_id for h in engine.search("密码重置", principals=who, top_k=50, mode=mode)}
        assert "not-for-jose" not in got and "eng-doc" in got
    stored = engine.store.query(None, ["doc_id", "deny"])
    assert [r["deny"] for r in stored if r["doc_id"] == "not-for-jose"] == [[JOSE_NFC]]


def test_unknown_or_invalid_narrowing(world: tuple[TestClient, Any]) -> None:
    client, _ = world
    assert ids(search(client, CAROL, principals=["group:eng", "group:ghost"])) == {
        "public-doc", "public-no-alice"}  # fmt: skip
    bad = search(client, CAROL, principals=["group:hr\nx"])
    assert bad.status_code == 400 and "control character" in bad.json()["detail"]


def _ghost_filter(op: str, value: int) -> dict[str, Any]:
    return {"operator": "NOT", "conditions": [{"field": "metadata.rank", "operator": op, "value": value}]}


def test_not_resolution_only_within_the_visible_set(world: tuple[TestClient, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """8 invisible chunks match ``rank >= 0``: with a limit of 3 ids the answer is the same as for a filter
    matching nothing (no 500, no 400: nothing tells the caller the invisible chunks exist)."""
    client, _ = world
    monkeypatch.setattr(store_mod, "MAX_FILTER_RESOLVED_IDS", 3)
    for mode in ("hybrid", "dense", "keyword"):
        many = search(client, BOB, mode=mode, filters=_ghost_filter(">=", 0))
        none = search(client, BOB, mode=mode, filters=_ghost_filter(">=", 10_000))
        assert many.status_code == none.status_code == 200
        strip = [{k: v for k, v in h.items()} for h in many.json()["hits"]]
        assert strip == none.json()["hits"]
        assert ids(many) == {"eng-secret", "eng-doc", "not-for-jose", "sales-doc", "public-doc", "public-no-alice"}
    # carol sees hr-doc (rank 1): a NOT over her visible chunks is resolved and applied
    assert ids(search(client, CAROL, filters=_ghost_filter(">=", 1))) == {"public-doc", "public-no-alice"}
    monkeypatch.setattr(store_mod, "MAX_FILTER_RESOLVED_IDS", 0)
    over = search(client, CAROL, filters=_ghost_filter(">=", 1))  # 1 VISIBLE match, over a limit of 0
    assert over.status_code == 400 and over.json()["error"] == "invalid_filter"
    assert "metadata.rank" in over.json()["detail"]


def test_not_resolution_runs_once_per_hybrid_query(world: tuple[TestClient, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = world
    seen: list[str] = []
    real = store_mod.MilvusStore._matching_ids

    def counting(self: Any, expr: str, limit: int) -> Any:
        seen.append(expr)
        return real(self, expr, limit)

    monkeypatch.setattr(store_mod.MilvusStore, "_matching_ids", counting)
    assert ids(search(client, BOB, mode="hybrid", filters=_ghost_filter(">=", 0)))
    assert len(seen) == 2  # the deny clause + the user's NOT, once each for both retrievers


HOSTILE: list[Any] = [
    {"operator": "NOT", "conditions": [{"field": "metadata.rank", "operator": ">", "value": i} for i in range(255)]},
    {"operator": "OR", "conditions": [_ghost_filter(">", i) for i in range(255)]},  # 255 NOTs, ~24 KB
    {"operator": "AND", "conditions": [_ghost_filter("<", i) for i in range(9)]},
    {"operator": "NOT", "conditions": [{"field": "metadata.tags", "operator": "contains_any", "value": ["a"]}]},
    {"field": "metadata.rank", "operator": "exists", "value": True},
    {"operator": "NOT", "conditions": [{"field": "deny", "operator": "contains_any", "value": ["user:bob"]}]},
    {"operator": "NOT", "conditions": [
        {"field": "acl", "operator": "contains_any", "value": [f"g{i}" * 60 for i in range(200)]}]},
    {"field": "title", "operator": "==", "value": "\"') or (1==1 || public == true"},
    {"field": "title", "operator": "==", "value": "a\nb"},
    {"field": "title", "operator": "==", "value": "a\\"},
    {"field": "metadata.x", "operator": "in", "value": [1, 2.5]},
    {"field": "metadata.x", "operator": ">", "value": 1e308},
    {"field": "start", "operator": ">", "value": 2**63 - 1},
    {"field": "start", "operator": ">", "value": 2**63},
    {"field": "metadata.a.b.c.d", "operator": "==", "value": "x"},
    {"field": "metadata.a.b.c.d.e", "operator": "==", "value": "x"},
    {"field": "metadata.1x", "operator": "==", "value": "x"},
    {"field": "public", "operator": "==", "value": True},
    {"field": "public", "operator": "!=", "value": True},
    {"operator": "NOT", "conditions": [{"field": "public", "operator": "==", "value": False}]},
    {"field": "chunk_id", "operator": ">", "value": ""},
    {"field": "doc_id", "operator": "in", "value": ["x"] * 1024},
    {"field": "doc_id", "operator": "in", "value": ["x"] * 1025},
    {"field": "doc_id", "operator": "==", "value": "x" * 4096},
    {"field": "doc_id", "operator": "==", "value": "\ud800"},
    {"field": "doc_id", "operator": "==", "value": None},
    {"field": "doc_id", "operator": "==", "value": ["x"]},
    {"field": "doc_id", "operator": "==", "value": {"$ne": 1}},
    {"operator": "and", "conditions": []},
    {"operator": "AND", "conditions": []},
    {"operator": "XOR", "conditions": [{"field": "doc_id", "operator": "==", "value": "x"}]},
    {"field": "acl", "operator": "==", "value": "group:eng"},
    {"field": "acl", "operator": "contains_any", "value": ["group:eng"]},
    {"field": "deny", "operator": "exists", "value": False},
]
_deep: dict[str, Any] = {"field": "doc_id", "operator": "!=", "value": "x"}
for _ in range(15):
    _deep = {"operator": "NOT", "conditions": [_deep]}
HOSTILE += [_deep, {"operator": "NOT", "conditions": [_deep]}]


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_filters_are_400_or_200_never_500(world: tuple[TestClient, Any], index: int,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    client, _ = world
    spec = HOSTILE[index]
    body = json.dumps({"query": "密码重置", "top_k": 50, "filters": spec})  # \ud800 travels as an escape
    if len(body) > 65536:
        pytest.fail("the hostile filter must fit the service's body limit to reach the engine")
    with caplog.at_level(logging.ERROR, logger="cjkrag"):
        response = client.post("/v1/search", content=body.encode("ascii"),
                               headers={"Authorization": f"Bearer {BOB}", "Content-Type": "application/json"})
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code == 200:
        visible = {"eng-secret", "eng-doc", "not-for-jose", "sales-doc", "public-doc", "public-no-alice"}
        assert ids(response) <= visible
    else:
        assert response.json().get("error", "invalid") != "internal_error"
    assert "post-check" not in caplog.text


def test_255_not_filter_is_a_fast_400(world: tuple[TestClient, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = world
    calls: list[str] = []
    real = store_mod.MilvusStore._matching_ids
    monkeypatch.setattr(store_mod.MilvusStore, "_matching_ids",
                        lambda self, expr, limit: calls.append(expr) or real(self, expr, limit))  # fmt: skip
    body = {"operator": "OR", "conditions": [_ghost_filter(">", i) for i in range(255)]}
    assert len(json.dumps(body)) > 20_000
    response = search(client, BOB, filters=body)
    assert response.status_code == 400 and "over the limit of" in response.json()["detail"]
    assert calls == []  # refused before any query ran


def test_http_fuzz_against_the_reference(world: tuple[TestClient, Any], caplog: pytest.LogCaptureFixture) -> None:
    """>= 2,000 generated requests with multi-principal keys and body-narrowed principals; each response is
    checked against the exact visible set of an independent rule; the defensive post-check never fires."""
    from cjkrag.pipeline.search import post_check_drops

    client, _ = world
    docs = {d["id"]: d for d in DOCS + GHOSTS}

    def norm(p: str) -> str:
        return unicodedata.normalize("NFC", p.strip())

    def visible(doc: dict[str, Any], held: set[str], granting: set[str]) -> bool:
        if held & {norm(p) for p in doc.get("deny", [])}:
            return False
        return bool(doc.get("public")) or bool(granting & {norm(p) for p in doc.get("acl", [])})

    pool = sorted({p for ps in KEYS.values() for p in ps} | {"group:ghost", "group:hr", "user:nobody", JOSE_NFD})
    rng = random.Random(20261202)
    drops = post_check_drops()
    requests = 0
    with caplog.at_level(logging.ERROR, logger="cjkrag.search"):
        for _ in range(2100):
            requests += 1
            key = rng.choice(list(KEYS))
            held = {norm(p) for p in KEYS[key]}
            body: dict[str, Any] = {"query": "".join(rng.sample(WORDS, rng.randint(1, 3))) + "密码重置",
                                    "top_k": rng.randint(1, 12), "mode": rng.choice(["hybrid", "dense"])}
            granting = held
            if rng.random() < 0.6:
                narrow = rng.sample(pool, rng.randint(0, 4))
                body["principals"] = narrow
                granting = held & {norm(p) for p in narrow}
            expected = {d for d, doc in docs.items() if visible(doc, held, granting)}
            if rng.random() < 0.3:
                limit = rng.randint(0, 7)
                body["filters"] = _ghost_filter(">=", limit)
                expected = {d for d in expected if not docs[d].get("metadata", {}).get("rank", -1) >= limit}
            r = client.post("/v1/search", json=body, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, (body, r.text)
            got = [h["doc_id"] for h in r.json()["hits"]]
            assert set(got) <= expected, (key, body, set(got) - expected)
            assert len(got) == min(body["top_k"], len(expected)), (key, body, got, expected)
    assert requests >= 2000
    assert post_check_drops() == drops and "post-check" not in caplog.text
