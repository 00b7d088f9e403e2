"""Micro-batching of concurrent requests' query embeddings: one caller never sees another's results.

Attacker view: callers holding different principals search at the same moment, so their query embeddings
share model batches; each must get exactly the hits it gets alone (same ids, order, scores), all of them
readable by it. Then the batcher itself: rows go back by position, errors reach every caller of the batch,
and a full queue refuses at once (503 in the service) instead of growing.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from cjkrag.service import ServiceSettings, create_app, hash_api_key
from cjkrag.service.batching import FairGate, MicroBatcher, Overloaded
from tests.conftest import make_engine

KEYS = {
    "cjk_alice0001_secret": ["user:alice", "group:eng"],
    "cjk_bob000001_secret": ["user:bob", "group:sales"],
    "cjk_carol0001_secret": ["user:carol", "group:hr"],
    "cjk_dave00001_secret": ["user:dave"],
}
GROUPS = {"eng": "工程部门", "sales": "销售部门", "hr": "人事部门"}
TOPICS = ["密码重置", "退款流程", "物流查询", "発票の再発行", "東京の会議室", "비밀번호 변경"]
DOCS: list[dict[str, Any]] = [
    {"id": f"{g}-{i}", "text": f"{topic} {name}的内部文档 {i}。", "acl": [f"group:{g}"]}
    for g, name in GROUPS.items() for i, topic in enumerate(TOPICS)
] + [
    {"id": f"eng-deny-alice-{i}", "text": f"{topic} 工程部门 但不给 alice。", "acl": ["group:eng"],
     "deny": ["user:alice"]} for i, topic in enumerate(TOPICS)
] + [{"id": f"public-{i}", "text": f"{topic} 公开的帮助中心。", "public": True} for i, topic in enumerate(TOPICS)]  # fmt: skip


def readable(principals: list[str], doc: dict[str, Any]) -> bool:
    if set(doc.get("deny", [])) & set(principals):
        return False
    return bool(doc.get("public")) or bool(set(doc.get("acl", [])) & set(principals))


BY_ID = {d["id"]: d for d in DOCS}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    tmp = Path(tmp_path_factory.mktemp("svc_batching"))
    # no query cache: every request's query goes through the batcher
    engine = make_engine(tmp / "data", retrieval={"candidates": 50, "query_cache_size": 0})
    path = tmp / "docs.jsonl"
    path.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in DOCS) + "\n", encoding="utf-8")
    assert engine.ingest([str(path)]).documents == len(DOCS)
    keys = tmp / "keys.yaml"
    entries = [{"id": f"key-{i}", "hash": hash_api_key(k), "principals": p} for i, (k, p) in enumerate(KEYS.items())]
    keys.write_text(yaml.safe_dump({"keys": entries}), encoding="utf-8")
    # a long wait: concurrent requests surely share batches
    settings = ServiceSettings(api_keys_file=keys, batch_max_wait_ms=30, batch_max_size=64)
    with TestClient(create_app(engine, settings)) as client:
        yield client, engine
    engine.close()


def _search(client: TestClient, key: str, query: str, mode: str) -> list[tuple[str, float]]:
    r = client.post("/v1/search", json={"query": query, "top_k": 20, "mode": mode},
                    headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert r.status_code == 200, r.text
    return [(h["doc_id"], h["score"]) for h in r.json()["hits"]]


@pytest.mark.parametrize("mode", ["hybrid", "dense"])
def test_concurrent_callers_each_get_exactly_their_own_hits(world: tuple[TestClient, Any], mode: str) -> None:
    client, engine = world
    batcher = engine.pipeline.embed_queries.__self__
    assert isinstance(batcher, MicroBatcher)
    calls = [(key, topic) for topic in TOPICS for key in KEYS] * 2
    alone = {(k, q): _search(client, k, q, mode) for k, q in dict.fromkeys(calls)}  # one at a time
    start = threading.Barrier(16)

    def call(kq: tuple[str, str]) -> list[tuple[str, float]]:
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=5)
        return _search(client, kq[0], kq[1], mode)

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(call, calls))
    assert batcher.largest_batch > 1  # requests did share model batches
    for (key, query), got in zip(calls, together, strict=True):
        assert got == alone[(key, query)], (key, query)
        assert got, (key, query)  # every caller reads at least the public chunks
        assert all(readable(KEYS[key], BY_ID[doc]) for doc, _ in got), (key, got)


def test_batcher_returns_each_caller_its_own_rows() -> None:
    def fn(items: list[str]) -> np.ndarray:
        threading.Event().wait(0.01)  # slow model: callers pile up into batches
        return np.array([[float(len(s)), float(sum(map(ord, s)))] for s in items])

    b: MicroBatcher[str] = MicroBatcher(fn, max_batch=64, max_wait_ms=5)
    inputs = [[f"q{i}"] * (1 + i % 3) + [f"x{i}"] for i in range(48)]
    with ThreadPoolExecutor(24) as pool:
        outs = list(pool.map(b.submit, inputs))
    for items, rows in zip(inputs, outs, strict=True):
        assert rows.tolist() == fn(items).tolist()
    assert b.largest_batch > 1 and b.items == sum(map(len, inputs))
    b.close()


def test_a_failing_batch_fails_every_caller_in_it_and_the_batcher_lives_on() -> None:
    def fn(items: list[str]) -> np.ndarray:
        if "boom" in items:
            raise RuntimeError("model failed")
        return np.zeros((len(items), 2))

    b: MicroBatcher[str] = MicroBatcher(fn, max_batch=8, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="model failed"):
        b.submit(["boom"])
    assert b.submit(["ok", "ok"]).shape == (2, 2)
    b.close()


def test_a_full_queue_refuses_at_once() -> None:
    entered, release = threading.Event(), threading.Event()

    def fn(items: list[str]) -> np.ndarray:
        entered.set()
        release.wait(10)
        return np.zeros((len(items), 1))

    b: MicroBatcher[str] = MicroBatcher(fn, max_batch=1, max_wait_ms=0, max_queue=2)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(b.submit, ["a"])
        assert entered.wait(5)  # "a" is in the model; the queue is empty again
        queued = [pool.submit(b.submit, [x]) for x in ("b", "c")]
        for _ in range(500):
            if b._queued == 2:
                break
            threading.Event().wait(0.01)
        assert b._queued == 2
        with pytest.raises(Overloaded, match="batch_max_queue=2"):
            b.submit(["d"])
        release.set()
        assert first.result().shape == (1, 1) and all(f.result().shape == (1, 1) for f in queued)
    b.close()


def test_service_answers_503_with_retry_after_when_overloaded(world: tuple[TestClient, Any]) -> None:
    client, engine = world
    pipeline = engine.pipeline
    saved = pipeline.embed_queries

    def overloaded(_: list[str]) -> np.ndarray:
        raise Overloaded("query-embedding: 256 items already queued")

    pipeline.embed_queries = overloaded
    try:
        r = client.post("/v1/search", json={"query": "密码重置 overload"},
                        headers={"Authorization": f"Bearer {next(iter(KEYS))}"})  # fmt: skip
    finally:
        pipeline.embed_queries = saved
    assert r.status_code == 503 and r.json()["error"] == "overloaded" and r.headers["Retry-After"] == "1"


# -- the search gate: at most N searches at once, the rest in arrival order --------------------------------
def test_gate_admits_at_most_limit_and_then_strictly_in_arrival_order() -> None:
    import time

    gate = FairGate(2)
    inside: list[int] = []
    peak = 0
    order: list[int] = []
    lock = threading.Lock()
    release = threading.Event()

    def holder(n: int) -> None:
        nonlocal peak
        with gate:
            with lock:
                order.append(n)
                inside.append(n)
                peak = max(peak, len(inside))
            release.wait(10)
            with lock:
                inside.remove(n)

    threads = [threading.Thread(target=holder, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    while len(order) < 2:
        time.sleep(0.005)
    for n in range(2, 8):  # queue up one at a time, so arrival order is known
        t = threading.Thread(target=holder, args=(n,))
        t.start()
        threads.append(t)
        while gate.waiting < n - 1:
            time.sleep(0.005)
    release.set()
    for t in threads:
        t.join(10)
    assert peak == 2 and sorted(order[:2]) == [0, 1] and order[2:] == [2, 3, 4, 5, 6, 7]


def test_gate_refuses_past_max_waiting_and_after_its_timeout() -> None:
    gate = FairGate(1, max_waiting=1, timeout_s=0.2)
    with gate, ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(lambda: gate.__enter__())  # waits in line, then times out
        import time

        while gate.waiting < 1 and not waiting.done():
            time.sleep(0.005)
        with pytest.raises(Overloaded, match="already waiting"):
            gate.__enter__()
        with pytest.raises(Overloaded, match="waited"):
            waiting.result(5)
    assert gate.waiting == 0
    with gate:  # the slot was given back and nobody is left in line
        pass
    with pytest.raises(ValueError):
        FairGate(0)


def test_service_answers_503_when_every_search_slot_is_taken(world: tuple[TestClient, Any]) -> None:
    _, engine = world
    pipeline = engine.pipeline
    saved = pipeline.embed_queries
    entered, release = threading.Event(), threading.Event()

    def slow(texts: list[str]) -> np.ndarray:
        entered.set()
        release.wait(10)
        return engine.embedder.embed_queries(texts)

    # batch_max_size 1: this app leaves the module's batcher alone; one slot, nobody may wait
    settings = ServiceSettings(batch_max_size=1, max_concurrent_searches=1, max_waiting_searches=0)
    headers = {"Authorization": f"Bearer {next(iter(KEYS))}"}
    app = create_app(engine, settings, authenticator=world[0].app.state.authenticator)  # the module's keys
    with TestClient(app) as client:
        assert client.app.state.search_gate.limit == 1
        pipeline.embed_queries = slow
        try:
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(client.post, "/v1/search", json={"query": "密码重置 slot"}, headers=headers)
                assert entered.wait(10)
                second = client.post("/v1/search", json={"query": "退款流程 slot"}, headers=headers)
                release.set()
                assert first.result(30).status_code == 200
        finally:
            pipeline.embed_queries = saved
            release.set()
    assert second.status_code == 503 and second.json()["error"] == "overloaded"
    assert second.headers["Retry-After"] == "1"
