"""MilvusStore on a real Milvus Lite 2.5.1 file (the C++ engine) in tmp: Milvus specifics.

The backend-agnostic suite runs on Milvus Lite in ``tests/conformance/``.

One Lite server per module (starting one costs ~2 s); every test gets its own collection, dropped after.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cjkrag.connectors.filters import Condition, Logical
from cjkrag.connectors.milvus import store as store_mod
from cjkrag.connectors.milvus.filters import render
from cjkrag.connectors.milvus.store import MilvusStore
from cjkrag.errors import ConfigError, FilterError, StoreError, StoreUnavailable
from tests.conformance.base import CJK_DOCS, DIM, make_record, reference_bm25

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("milvus") / "sub" / "milvus.db")  # parent dir created by warm_up
    keeper = MilvusStore(path, "keeper")  # keeps the Lite server up for the module
    keeper.warm_up()
    yield path
    keeper.close()


@pytest.fixture
def store(lite_db: str) -> Iterator[MilvusStore]:
    s = MilvusStore(lite_db, f"t_{uuid.uuid4().hex[:10]}")
    s.warm_up()
    yield s
    s.drop_collection()
    s.close()


# -- Milvus specifics (hand-written expressions: independent of the filter translator) -----------------
def test_parent_dir_created_and_lite_path_must_end_in_db(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"\.db"):
        MilvusStore(str(tmp_path / "milvus.sqlite"), "c").warm_up()
    with pytest.raises(ConfigError, match="collection name"):
        MilvusStore(str(tmp_path / "m.db"), "bad-name")


def test_unreachable_server_raises_store_unavailable_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    s = MilvusStore("http://127.0.0.1:1", "c")  # constructing connects to nothing
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        s.warm_up()
    # a hang guard, not a speed test: the connect timeout is 5 s
    assert time.monotonic() - began < 30
    message = str(info.value)
    assert "http://127.0.0.1:1" in message and "docker compose up milvus" in message
    monkeypatch.setattr(store_mod, "CONNECT_TIMEOUT_S", 0.5)
    with pytest.raises(StoreUnavailable, match=r"within 0\.5 s"):
        s.count()  # every operation connects first, and fails the same way


def test_keyword_scores_equal_lucene_bm25(store: MilvusStore) -> None:
    store.ensure_collection(DIM)
    store.upsert([make_record(cid, keywords=kw) for cid, kw in CJK_DOCS.items()])
    for query in (["首都"], ["東京"], ["首都", "中国"], ["수도", "검색"]):
        ref = reference_bm25(CJK_DOCS, query)
        hits = store.search_keyword(query, 10, None)
        assert {h.chunk_id: pytest.approx(ref[h.chunk_id], rel=1e-3) for h in hits} == {
            h.chunk_id: h.score for h in hits
        }
        assert {h.chunk_id for h in hits} == set(ref)


def test_prefilter_with_hand_written_expression(store: MilvusStore) -> None:
    """The ACL expression goes inside the search: 3 visible hits though 30 invisible ones score higher."""
    store.ensure_collection(DIM)
    hidden = [
        make_record(f"h{i}", vector=[1.0] + [0.0] * (DIM - 1), keywords=["鍵", "鍵"]) for i in range(30)
    ]
    shown = [
        make_record(f"s{i}", vector=[0.0] * i + [1.0] + [0.0] * (DIM - 1 - i), keywords=["鍵", "x", "y"])
        for i in range(1, 5)
    ]
    for r in shown:
        r.acl = ["group:vis"]
    store.upsert(hidden + shown)
    expr = render("ARRAY_CONTAINS_ANY(acl, {p0}) or public == {p1}", {"p0": ["group:vis"], "p1": True})
    dense = store._search_dense_expr([1.0, 0.5, 0.25, 0.1, 0.05, 0, 0, 0], 3, expr)
    assert [h.chunk_id for h in dense] == ["s1", "s2", "s3"]
    keyword = store._search_keyword_expr(["鍵"], 3, expr)
    assert len(keyword) == 3 and {h.chunk_id for h in keyword} <= {"s1", "s2", "s3", "s4"}
    assert store._count_expr(expr) == 4


@pytest.mark.parametrize(
    "value",
    [
        'he said "hi"',
        "back\\slash",
        "single'quote",
        "東京 「引用」",
        "brace {p1} end",
        "pct%_like",
        'mix\\"ed',
        "tab\there",
    ],
)
def test_inlined_literals_match_stored_values(store: MilvusStore, value: str) -> None:
    store.ensure_collection(DIM)
    store.upsert(
        [make_record("target", doc_id=value, acl=[value], metadata={"m": value}), make_record("other")]
    )
    for template in (
        "doc_id == {p0}",
        "doc_id in {p1}",
        "ARRAY_CONTAINS_ANY(acl, {p1})",
        'metadata["m"] == {p0}',
    ):
        expr = render(template, {"p0": value, "p1": [value]})
        rows = store._query_expr(expr, ["doc_id"], 10)
        assert rows == [{"chunk_id": "target", "doc_id": value}], expr


def test_line_breaks_cannot_be_filtered() -> None:
    with pytest.raises(FilterError, match="line break"):
        render("doc_id == {p0}", {"p0": "line\nbreak"})


def test_oversized_text_is_rejected_before_anything_is_written(store: MilvusStore) -> None:
    store.ensure_collection(DIM)
    good = make_record("good")
    big = make_record("too-big", text="漢" * 22000)  # 22000 chars but 66000 bytes > 65535
    with pytest.raises(StoreError, match=r"too-big.*'text'.*66000 bytes"):
        store.upsert([good, big])
    assert store.count() == 0
    with pytest.raises(StoreError, match="acl"):
        store.upsert([make_record("wide", acl=["g" * 300])])
    with pytest.raises(StoreError, match="whitespace"):
        store.upsert([make_record("spaced", keywords=["two words"])])
    with pytest.raises(StoreError, match="doc_id holds a line break"):
        store.upsert([make_record("nl", doc_id="line\nbreak")])
    with pytest.raises(StoreError, match="whitespace"):
        store.search_keyword(["two words"], 5, None)
    assert store.count() == 0


def test_duplicate_ids_in_one_batch_last_wins(store: MilvusStore) -> None:
    store.ensure_collection(DIM)
    store.upsert([make_record("dup", text="first"), make_record("dup", text="second")])
    assert store._query_expr("", ["text"], 10) == [{"chunk_id": "dup", "text": "second"}]


def test_incompatible_existing_collection(store: MilvusStore) -> None:
    store._c().create_collection(store.collection, dimension=DIM)  # pymilvus quick setup: id + vector
    with pytest.raises(StoreError, match=rf"{store.collection}.*incompatible.*drop"):
        store.ensure_collection(DIM)
    with pytest.raises(StoreError, match="incompatible"):
        store.count()


def test_reuse_with_other_analyzer_or_schema_version_is_refused_naming_both(
    lite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"t_{uuid.uuid4().hex[:10]}"
    first = MilvusStore(lite_db, name, analyzer="bigrams=True,v1")
    first.ensure_collection(DIM)
    first.upsert([make_record("a")])
    first.ensure_collection(DIM)  # twice, same settings: fine
    first.close()
    other = MilvusStore(lite_db, name, analyzer="bigrams=False,v1")
    try:
        for call in (lambda: other.ensure_collection(DIM), other.count):
            with pytest.raises(StoreError) as info:
                call()
            message = str(info.value)
            assert "analyzer version is 'bigrams=True,v1' in the collection but 'bigrams=False,v1' here" in message
            assert "another collection name" in message and "cjkrag drop" in message
        monkeypatch.setattr(store_mod, "settings", lambda dim, analyzer: {
            "schema": 99, "dim": dim, "distance": "cosine", "analyzer": analyzer})  # fmt: skip
        same_analyzer = MilvusStore(lite_db, name, analyzer="bigrams=True,v1")
        with pytest.raises(StoreError, match="schema version is 1 in the collection but 99 here"):
            same_analyzer.ensure_collection(DIM)
        same_analyzer.close()
        monkeypatch.undo()
        with pytest.raises(StoreError, match=r"vector dimension is 8, the embedder gives 16"):
            MilvusStore(lite_db, name, analyzer="bigrams=True,v1").ensure_collection(DIM * 2)
    finally:
        other.drop_collection()
        other.close()


def test_collection_from_before_the_settings_record_is_still_opened(store: MilvusStore) -> None:
    import pymilvus

    from cjkrag.connectors.milvus.schema import build_schema

    store._c().create_collection(store.collection, schema=build_schema(pymilvus, DIM))  # no settings recorded
    store.ensure_collection(DIM)
    assert store.count() == 0


def test_reads_on_missing_collection_and_writes_need_it(store: MilvusStore) -> None:
    assert store.count() == 0
    assert store.search_dense([1.0] * DIM, 3, None) == []
    assert store.search_keyword(["x"], 3, None) == []
    assert store.query(None, ["chunk_id"]) == []
    with pytest.raises(StoreError, match="ensure_collection"):
        store.upsert([make_record("x")])


def test_argument_errors(store: MilvusStore) -> None:
    store.ensure_collection(DIM)
    with pytest.raises(StoreError, match="16384"):
        store.search_dense([1.0] * DIM, 16385, None)
    with pytest.raises(StoreError, match="top_k"):
        store.search_keyword(["x"], 0, None)
    with pytest.raises(StoreError, match="ids or filters"):
        store.delete()
    with pytest.raises(StoreError, match="nope"):
        store.query(None, ["nope"])


def test_delete_ids_and_filter_together_is_the_intersection(store: MilvusStore) -> None:
    store.ensure_collection(DIM)
    store.upsert([make_record(f"i{i}", tenant="a" if i < 2 else "b") for i in range(4)])
    store.delete(ids=["i0", "i2"], filters=Condition("tenant", "==", "a"))
    assert sorted(str(r["chunk_id"]) for r in store.query(None, ["chunk_id"])) == ["i1", "i2", "i3"]


def test_query_pages_past_the_window(store: MilvusStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paging by primary key (the real window is 16384 rows; shrunk here to page 25 rows by 4)."""
    store.ensure_collection(DIM)
    store.upsert([make_record(f"p{i:02d}", tenant="x" if i % 5 else "y") for i in range(25)])
    from cjkrag.connectors.milvus import reads

    monkeypatch.setattr(reads, "MAX_TOP_K", 6)
    monkeypatch.setattr(reads, "PAGE_ROWS", 4)
    rows = store._query_expr("", ["tenant"], 100)
    assert [r["chunk_id"] for r in rows] == [f"p{i:02d}" for i in range(25)]
    assert len(store._query_expr('tenant == "x"', ["tenant"], 100)) == 20
    assert len(store._query_expr('tenant == "x"', ["tenant"], 9)) == 9
    assert store._query_expr('tenant == "nobody"', ["tenant"], 100) == []


def test_data_persists_across_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "persist.db")
    first = MilvusStore(path, "persist")
    first.ensure_collection(DIM)
    first.upsert([make_record(cid, keywords=kw) for cid, kw in CJK_DOCS.items()])
    first.close()  # last user: the Lite server stops and frees the file
    second = MilvusStore(path, "persist")
    try:
        assert second.count() == len(CJK_DOCS)
        assert [h.chunk_id for h in second.search_keyword(["東京"], 5, None)] == ["ja-tokyo"]
        second.ensure_collection(DIM)
        with pytest.raises(StoreError, match="dimension"):
            second.ensure_collection(DIM + 1)
    finally:
        second.close()


@pytest.mark.slow
def test_query_more_than_16384_rows(store: MilvusStore) -> None:
    store.ensure_collection(DIM)
    n = 16384 + 1000
    store.upsert([make_record(f"r{i:05d}", doc_id=f"doc{i % 3}", keywords=["x"]) for i in range(n)])
    rows = store._query_expr("", ["doc_id"], 10**6)
    assert len(rows) == n and len({r["chunk_id"] for r in rows}) == n
    assert len(store._query_expr('doc_id == "doc0"', ["doc_id"], 10**6)) == len(range(0, n, 3))


def test_lite_negation(store: MilvusStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lite 2.5.1 has no NOT: complements in the engine, else ``chunk_id not in [ids]`` via _lite_expr."""
    store.ensure_collection(DIM)
    store.upsert(
        [
            make_record(
                f"n{i}", tenant="a" if i < 3 else "b", deny=["u:x"] if i == 4 else [], metadata={"y": i}
            )
            for i in range(6)
        ]
    )
    not_a = Logical("NOT", (Condition("tenant", "==", "a"),))
    assert sorted(str(r["chunk_id"]) for r in store.query(not_a, ["chunk_id"])) == ["n3", "n4", "n5"]
    assert store.count(Logical("NOT", (Condition("deny", "contains_any", ["u:x", "g:y"]),))) == 5
    assert store.count(Logical("NOT", (Condition("deny", "contains_any", ["u:nobody"]),))) == 6
    assert store.count(Logical("NOT", (Logical("NOT", (Condition("tenant", "==", "b"),)),))) == 3
    # NOT of a metadata comparison has no complement in Lite: resolved to chunk ids by the store
    not_late = Logical("NOT", (Condition("metadata.y", ">=", 2),))
    assert sorted(str(r["chunk_id"]) for r in store.query(not_late, ["chunk_id"])) == ["n0", "n1"]
    monkeypatch.setattr(store_mod, "MAX_FILTER_RESOLVED_IDS", 3)
    with pytest.raises(FilterError, match="more of the chunks you may read than"):
        store.count(not_late)  # 4 chunks have y >= 2: a clear FilterError (400 in the service), not a 500
    # too many denied chunks to exclude by id: falls back to deny[i] not in P over the array capacity
    monkeypatch.setattr(store_mod, "MAX_RESOLVED_IDS", 0)
    assert store.count(Logical("NOT", (Condition("deny", "contains_any", ["u:x"]),))) == 5
    assert store.count(Logical("NOT", (Condition("deny", "contains_any", ["u:nobody"]),))) == 6


def test_insert_batches_bound_rows_and_bytes() -> None:
    from cjkrag.connectors.milvus.schema import batches, record_to_row

    rows = [record_to_row(make_record(f"b{i}", text="字" * 1000), DIM) for i in range(10)]
    by_rows = list(batches(rows, 4, 10**9))
    assert [len(b) for b in by_rows] == [4, 4, 2]
    by_bytes = list(batches(rows, 100, 3 * 3000 + 3 * 700))  # ~3.6 kB per row: three fit
    assert [len(b) for b in by_bytes] == [3, 3, 3, 1]
    assert [r["chunk_id"] for b in by_bytes for r in b] == [f"b{i}" for i in range(10)]


def test_lite_server_waits_passively_whatever_this_process_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Milvus Lite child gets OMP_WAIT_POLICY=PASSIVE (cjkrag/__init__.py explains why); ours is restored."""
    import os

    from milvus_lite.server_manager import server_manager_instance

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    s = MilvusStore(str(tmp_path / "env.db"), "envcheck")
    s.warm_up()
    try:
        path = str((tmp_path / "env.db").resolve())
        pid = server_manager_instance._servers[path]._p.pid
        child = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
        )
        assert child.get("OMP_WAIT_POLICY") == "PASSIVE" and "GOMP_SPINCOUNT" not in child
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and os.environ["GOMP_SPINCOUNT"] == "1000"
    finally:
        s.close()


def test_a_prepared_filter_is_used_as_is_and_only_by_its_store(store: MilvusStore, tmp_path: Path) -> None:
    store.ensure_collection(DIM)
    store.upsert([make_record(f"i{i}", tenant="a" if i < 3 else "b") for i in range(6)])
    flt = Condition("tenant", "==", "a")
    prepared = store.prepare_filter(flt)
    assert prepared.expr == store._expr(flt)
    vec = [1.0] + [0.0] * (DIM - 1)
    got = store.search_dense(vec, 5, prepared)
    assert got == store.search_dense(vec, 5, flt) and {h.chunk_id for h in got} == {"i0", "i1", "i2"}
    other = MilvusStore(str(tmp_path / "other.db"), "other")
    with pytest.raises(StoreError, match="only for the store that prepared it"):
        other.search_dense(vec, 5, prepared)


# -- late fetch and the NOT-resolution cache (issue 15: less work per query) -----------------------------
def test_search_without_fields_then_fetch(store: MilvusStore) -> None:
    store.ensure_collection(DIM)
    store.upsert([make_record(f"f{i}", tenant="a" if i < 3 else "b", language="zh") for i in range(6)])
    vec = [1.0] + [0.0] * (DIM - 1)
    full = store.search_dense(vec, 6, None)
    lean = store.search_dense(vec, 6, None, fields=())
    assert [(h.chunk_id, h.score) for h in lean] == [(h.chunk_id, h.score) for h in full]
    assert all(h.fields == {} for h in lean) and all(h.fields["text"] for h in full)
    some = store.search_keyword(["f1"], 3, None, fields=("language",))
    assert some and all(h.fields == {"language": "zh"} for h in some)
    by_id = {h.chunk_id: h.fields for h in full}
    ids = [h.chunk_id for h in lean]
    assert store.fetch(ids, None) == by_id  # every output field, as the full search gave them
    tenant_a = Condition("tenant", "==", "a")
    assert set(store.fetch(ids, store.prepare_filter(tenant_a))) == {"f0", "f1", "f2"}  # filter applied again
    assert store.fetch(["f1", "nope"], None, ["doc_id"]) == {"f1": {"doc_id": "doc-f1"}}
    assert store.fetch(["nope"], tenant_a) == {} and store.fetch([], None) == {}
    with pytest.raises(StoreError, match="not search output fields"):
        store.fetch(ids, None, ["vector"])
    with pytest.raises(StoreError, match="not search output fields"):
        store.search_dense(vec, 3, None, fields=["keywords"])
    with pytest.raises(StoreError, match="limit"):
        store.fetch([f"x{i}" for i in range(store_mod.MAX_TOP_K + 1)], None)


def test_deny_resolution_is_cached_until_the_next_write(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lite resolves NOT deny contains_any P to ids (two round trips); the answer is reused until a write."""
    from cjkrag.connectors.filters import acl_filter

    store.ensure_collection(DIM)
    store.upsert([make_record(f"d{i}", public=True, deny=["u:x"] if i == 4 else []) for i in range(6)])
    lookups: list[str] = []
    real = store._lookup_ids
    monkeypatch.setattr(store, "_lookup_ids", lambda expr, limit: lookups.append(expr) or real(expr, limit))
    access = acl_filter(["u:x"])

    def visible() -> set[str]:
        return {str(r["chunk_id"]) for r in store.query(access, ["chunk_id"])}

    assert visible() == {"d0", "d1", "d2", "d3", "d5"}
    assert visible() == {"d0", "d1", "d2", "d3", "d5"} and len(lookups) == 1  # the second one was cached
    store.upsert([make_record("d0", public=True, deny=["u:x"])])  # d0 now denies u:x: must vanish at once
    assert visible() == {"d1", "d2", "d3", "d5"} and len(lookups) == 2
    store.delete(ids=["d4"])
    store.upsert([make_record("d4", public=True)])  # d4's deny is gone: it must appear at once
    assert visible() == {"d1", "d2", "d3", "d4", "d5"} and len(lookups) == 3
    store.delete(filters=Condition("doc_id", "==", "doc-d0"))
    assert visible() == {"d1", "d2", "d3", "d4", "d5"} and len(lookups) == 4
    assert store.search_dense([1.0] + [0.0] * (DIM - 1), 10, access) and len(lookups) == 4


def test_resolutions_read_during_a_write_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from cjkrag.connectors.milvus import resolve_cache as rc

    calls: list[int] = []

    def lookup(expr: str, limit: int) -> list[str] | None:
        calls.append(1)
        return ["a"]

    path = f"/nowhere/{uuid.uuid4().hex}.db"
    rc.write_begin(path)
    assert rc.resolve(path, "c", "e", 5, lookup) == ["a"] and rc.resolve(path, "c", "e", 5, lookup) == ["a"]
    assert len(calls) == 2  # nothing kept while a write is in flight
    rc.write_end(path)

    def racing(expr: str, limit: int) -> list[str] | None:  # a write starts and ends while it reads
        rc.write_begin(path)
        rc.write_end(path)
        return lookup(expr, limit)

    rc.resolve(path, "c", "e", 5, racing)
    rc.resolve(path, "c", "e", 5, lookup)
    assert len(calls) == 4  # the racing answer was not kept
    got = rc.resolve(path, "c", "e", 5, lookup)
    assert len(calls) == 4 and got == ["a"]
    got.append("mutated")  # callers get copies
    assert rc.resolve(path, "c", "e", 5, lookup) == ["a"]
    assert rc.resolve(path, "c", "e", 6, lookup) == ["a"] and len(calls) == 5  # the limit is in the key
    rc.forget(path)  # a store closing the file: nothing about it stays
    rc.resolve(path, "c", "e", 5, lookup)
    assert len(calls) == 6
    monkeypatch.setattr(rc, "MAX_ENTRIES", 2)
    for i in range(5):
        rc.resolve(path, "c", f"e{i}", 5, lookup)
    assert rc.size()[0] <= 2
