"""Qdrant edge specifics: what a process wrote survives the process dying without close() (WAL), and the
qdrant-edge-py boolean quirk stays handled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cjkrag.connectors.filters import Condition
from tests.conformance.base import CJK_DOCS, DIM

pytest.importorskip("qdrant_edge")

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import os, sys
sys.path.insert(0, {root!r})
from cjkrag.connectors.qdrant.store import QdrantStore
from tests.conformance.base import CJK_DOCS, make_record
s = QdrantStore("persist", mode="edge", path={path!r})
s.ensure_collection({dim})
s.upsert([make_record(c, keywords=k, public=c.startswith("ja")) for c, k in CJK_DOCS.items()])
os._exit(0)  # no close(), no flush(): as if the process were killed
"""


def test_writes_survive_a_process_that_exits_without_closing(tmp_path: Path) -> None:
    from cjkrag.connectors.qdrant.store import QdrantStore

    code = WRITER.format(root=str(ROOT), path=str(tmp_path), dim=DIM)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)
    store = QdrantStore("persist", mode="edge", path=tmp_path)
    try:
        assert store.count() == len(CJK_DOCS)
        assert [h.chunk_id for h in store.search_keyword(["東京"], 5, None)] == ["ja-tokyo"]
        public = {str(r["chunk_id"]) for r in store.query(Condition("public", "==", True), ["public"])}
        assert public == {c for c in CJK_DOCS if c.startswith("ja")}  # booleans match after the reopen too
    finally:
        store.close()


def test_reserved_prefix_is_refused(tmp_path: Path) -> None:
    from cjkrag.connectors.qdrant.engines import BOOL_TRUE
    from cjkrag.connectors.qdrant.store import QdrantStore
    from cjkrag.errors import StoreError
    from tests.conformance.base import make_record

    store = QdrantStore("r", mode="edge", path=tmp_path)
    store.ensure_collection(DIM)
    try:
        with pytest.raises(StoreError, match="reserved"):
            store.upsert([make_record("x", metadata={"k": BOOL_TRUE})])  # would read back as True otherwise
        assert store.count() == 0
    finally:
        store.close()


def test_server_mode_unreachable_is_store_unavailable_naming_the_url() -> None:
    from cjkrag.connectors.qdrant.store import QdrantStore
    from cjkrag.errors import StoreUnavailable

    pytest.importorskip("qdrant_client")
    with pytest.raises(StoreUnavailable, match=r"http://127\.0\.0\.1:1"):
        QdrantStore("c", mode="server", url="http://127.0.0.1:1").warm_up()


def test_transient_errors_are_retried_and_others_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from cjkrag.connectors.qdrant import store as store_mod
    from cjkrag.errors import StoreError, StoreUnavailable

    monkeypatch.setattr(store_mod, "BACKOFF_S", 0.0)
    s = store_mod.QdrantStore("c", mode="server", url="http://q:6333")

    class Status(Exception):
        def __init__(self, code: int) -> None:
            super().__init__(f"status {code}")
            self.status_code = code

    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise Status(503)
        return 7

    assert s._call("count", flaky) == 7 and len(calls) == 3
    calls.clear()

    def bad_request() -> int:
        calls.append(1)
        raise Status(400)

    with pytest.raises(StoreError) as info:
        s._call("count", bad_request)
    assert len(calls) == 1 and not isinstance(info.value, StoreUnavailable)  # never retried

    def always_down() -> int:
        raise Status(503)

    with pytest.raises(StoreUnavailable, match="http://q:6333"):
        s._call("count", always_down)


@pytest.mark.parametrize("mode", ["edge", "local"])
def test_bm25_avgdl_auto_is_fixed_by_the_first_batch_and_recorded(tmp_path: Path, mode: str) -> None:
    """auto: the first batch's mean keyword count becomes the collection's BM25 average length, recorded, reused
    on reopen (later batches do not move it), refused against another explicit value, and scores are Lucene
    BM25 with exactly that length."""
    from cjkrag.connectors.qdrant.store import QdrantStore
    from cjkrag.errors import StoreError
    from tests.conformance.base import make_record, reference_bm25

    first = {"a": ["首都", "東京"], "b": ["首都", "北京", "中国", "城市"], "c": ["검색", "엔진", "검색", "문서", "한국", "서울"]}
    store = QdrantStore("avg", mode=mode, path=tmp_path)
    store.ensure_collection(DIM)
    try:
        store.upsert([make_record(c, keywords=k, public=True) for c, k in first.items()])
        assert store.bm25_avgdl == 4.0  # (2 + 4 + 6) / 3
        store.upsert([make_record("d", keywords=["首都"] * 40, public=True)])
        assert store.bm25_avgdl == 4.0  # fixed: stored vectors never go stale
    finally:
        store.close()
    reopened = QdrantStore("avg", mode=mode, path=tmp_path)
    try:
        hits = reopened.search_keyword(["首都"], 10, None)
        assert reopened.bm25_avgdl == 4.0
        docs = {**first, "d": ["首都"] * 40}
        ref = reference_bm25(docs, ["首都"], avgdl=4.0)
        assert {h.chunk_id: round(h.score, 4) for h in hits} == {k: round(v, 4) for k, v in ref.items()}
    finally:
        reopened.close()
    other = QdrantStore("avg", mode=mode, path=tmp_path, bm25_avgdl=256)
    try:
        with pytest.raises(StoreError, match=r"BM25 average length is 4\.0 in the collection but 256\.0 here"):
            other.ensure_collection(DIM)
    finally:
        other.close()


def test_concurrent_searches_on_the_edge_engine_equal_sequential_ones(tmp_path: Path) -> None:
    """The pipeline runs a hybrid query's keyword side on a worker thread and the service runs requests in
    parallel: the edge engine must answer concurrent searches exactly as one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import make_engine

    engine = make_engine(tmp_path, store={"backend": "qdrant"})
    try:
        engine.ingest([{"id": f"d{i}", "text": f"{t} 第{i}篇", "acl": [f"group:{i % 3}"], "public": i % 4 == 0}
                       for i, t in enumerate(["首都北京", "東京の検索", "서울 수도", "港口城市", "退款流程"] * 6)])  # fmt: skip
        calls = [(q, f"group:{g}", m) for q in ("首都", "検索", "수도", "港口 退款") for g in range(3)
                 for m in ("hybrid", "dense", "keyword")]  # fmt: skip

        def run(c: tuple[str, str, str]) -> list[tuple[str, float]]:
            return [(h.chunk_id, h.score) for h in engine.search(c[0], principals=[c[1]], mode=c[2], top_k=10)]

        alone = [run(c) for c in calls]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(run, calls * 3))
        assert together == alone * 3
        assert any(alone)
    finally:
        engine.close()
