"""The manifest-driven ingestion job over real Milvus Lite (FakeEmbedder): issue 8 items 2, 5, 6, 8c and issue 11.

Each test drives the real engine and injects faults only around the real store (FailingStore below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cjkrag.connectors.filters import Condition
from cjkrag.connectors.milvus import store as store_mod
from cjkrag.errors import InputError, StoreError
from tests.conftest import make_engine

LONG = "。".join(f"第{i}条：密码重置流程说明，请按步骤操作" for i in range(60)) + "。"


class FailingStore:
    """The real store, with upserts failing after ``upserts`` calls and/or every delete failing."""

    def __init__(self, inner: Any, *, upserts: int = 10**9, deletes_fail: bool = False) -> None:
        self.inner, self.upserts, self.deletes_fail = inner, upserts, deletes_fail
        self.queries = 0

    def upsert(self, records: Any) -> None:
        if self.upserts <= 0:
            raise StoreError("injected upsert failure")
        self.upserts -= 1
        self.inner.upsert(records)

    def delete(self, ids: Any = None, filters: Any = None) -> None:
        if self.deletes_fail:
            raise StoreError("injected delete failure")
        self.inner.delete(ids=ids, filters=filters)

    def query(self, *a: Any, **k: Any) -> Any:
        self.queries += 1
        return self.inner.query(*a, **k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingEmbedder:
    def __init__(self, inner: Any) -> None:
        self.inner, self.passages = inner, 0

    def embed_passages(self, texts: Any) -> Any:
        self.passages += len(texts)
        return self.inner.embed_passages(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def rows(engine: Any, doc_id: str) -> list[dict[str, Any]]:
    return engine.store.query(Condition("doc_id", "==", doc_id), ["chunk_id", "acl", "doc_hash", "keywords"])


def expected_ids(engine: Any, text: str, doc_id: str) -> set[str]:
    from cjkrag.ingest.chunker import chunk_text
    from cjkrag.ingest.records import chunk_id

    c = engine.config.chunking
    chunks = chunk_text(text, engine.embedder, max_tokens=c.max_tokens, overlap_tokens=c.overlap_tokens)
    return {chunk_id(doc_id, ch.index, ch.text) for ch in chunks}


@pytest.fixture
def small(tmp_path: Path) -> Any:
    """Small chunks and write batches, so a document spans many upserts."""
    eng = make_engine(tmp_path, chunking={"max_tokens": 64, "overlap_tokens": 0}, ingest={"batch_size": 4})
    yield eng
    eng.close()


def test_crash_mid_document_is_redone_not_skipped(small: Any) -> None:
    """Item 5: a failure after the first upsert of a 19-chunk document must not leave a prefix for good."""
    doc = {"id": "long", "text": LONG, "acl": ["group:a"]}
    want = expected_ids(small, LONG, "long")
    assert len(want) >= 19
    real = small.store
    small._store = FailingStore(real, upserts=1)
    rep = small.ingest([doc])
    assert rep.documents == 0 and len(rep.failed) == 1 and "injected" in rep.failed[0].error
    assert 0 < len(rows(small, "long")) < len(want)  # the crash left a prefix in the store
    assert small.manifest.get_many(["long"])["long"].complete is False

    small._store = real
    again = small.ingest([doc])
    assert again.documents == 1 and again.unchanged == 0 and not again.failures
    got = rows(small, "long")
    assert {r["chunk_id"] for r in got} == want and len(got) == len(want)
    assert small.ingest([doc]).unchanged == 1


def test_changed_access_with_failed_stale_delete_is_reported_and_retried(small: Any) -> None:
    """Item 2: stale chunks (old text, old ACL) that cannot be deleted fail the document; the rerun fixes it."""
    small.ingest([{"id": "d", "text": LONG, "acl": ["group:a"]}])
    shorter = LONG[: len(LONG) // 3]
    changed = {"id": "d", "text": shorter, "acl": ["group:b"]}
    real = small.store
    small._store = FailingStore(real, deletes_fail=True)
    rep = small.ingest([changed])
    assert rep.documents == 0 and len(rep.failed) == 1
    assert "could not be deleted" in rep.failed[0].error and rep.failed[0].fix
    small._store = real
    again = small.ingest([changed])
    assert again.documents == 1 and not again.failures
    assert {r["chunk_id"] for r in rows(small, "d")} == expected_ids(small, shorter, "d")
    assert all(r["acl"] == ["group:b"] for r in rows(small, "d"))
    for mode in ("dense", "keyword", "hybrid"):
        assert small.search("密码重置", principals=["group:a"], mode=mode) == []


def test_rerun_skips_by_one_manifest_lookup_without_store_queries(fake_engine: Any) -> None:
    docs = [{"id": f"d{i}", "text": f"第{i}号文档：退货政策说明。", "public": True} for i in range(40)]
    assert fake_engine.ingest(docs).documents == 40
    spy = FailingStore(fake_engine.store)
    fake_engine._store = spy
    rep = fake_engine.ingest(docs)
    assert rep.unchanged == 40 and rep.documents == 0
    assert spy.queries == 0  # no per-document (or any) store query: the manifest decided


def test_access_only_change_reuses_vectors_and_updates_every_chunk(small: Any) -> None:
    small.ingest([{"id": "d", "text": LONG, "acl": ["group:a"]}])
    before = {r["chunk_id"] for r in rows(small, "d")}
    counting = CountingEmbedder(small.embedder)
    small._embedder = counting
    rep = small.ingest([{"id": "d", "text": LONG, "acl": ["group:b"], "deny": ["user:eve"]}])
    assert rep.documents == 1 and rep.reused == 1
    assert counting.passages == 0  # nothing re-embedded
    after = rows(small, "d")
    assert {r["chunk_id"] for r in after} == before
    assert all(r["acl"] == ["group:b"] for r in after)
    assert small.search("密码重置", principals=["group:a"], mode="dense") == []
    assert small.search("密码重置", principals=["group:b"], mode="dense")
    assert small.search("密码重置", principals=["group:b", "user:eve"], mode="hybrid") == []


def test_settings_changes_redo_exactly_what_they_affect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"id": "d", "text": LONG, "acl": ["group:a"]}
    base = {"chunking": {"max_tokens": 64, "overlap_tokens": 0}}
    eng = make_engine(tmp_path, **base)
    eng.ingest([doc])
    n = len(rows(eng, "d"))
    kw_before = {r["chunk_id"]: r["keywords"] for r in rows(eng, "d")}
    eng.close()

    # analyzer: the collection records the analyzer it was built with and refuses another one (issue 9:
    # a query analyzed differently from the stored keywords would silently lose keyword hits)
    eng = make_engine(tmp_path, **base, analyzer={"bigrams": False})
    with pytest.raises(StoreError, match=r"analyzer version is 'bigrams=True.*' in the collection but 'bigrams=False"):
        eng.ingest([doc])
    eng.close()
    # a collection made before the record existed (no settings in its description): the manifest re-analyzes
    # in place, keywords only, vectors reused
    monkeypatch.setattr(store_mod, "recorded_settings", lambda description: None)
    eng = make_engine(tmp_path, **base, analyzer={"bigrams": False})
    counting = CountingEmbedder(eng.embedder)
    eng._embedder = counting
    rep = eng.ingest([doc])
    assert rep.documents == 1 and rep.reused == 1 and counting.passages == 0
    kw_after = {r["chunk_id"]: r["keywords"] for r in rows(eng, "d")}
    assert kw_after.keys() == kw_before.keys() and kw_after != kw_before  # re-analyzed, same chunks
    eng.close()

    eng = make_engine(tmp_path, chunking={"max_tokens": 48, "overlap_tokens": 0}, analyzer={"bigrams": False})
    counting = CountingEmbedder(eng.embedder)
    eng._embedder = counting
    rep = eng.ingest([doc])  # chunking: re-chunked and re-embedded, old chunks gone
    assert rep.documents == 1 and rep.reused == 0 and counting.passages > n
    assert {r["chunk_id"] for r in rows(eng, "d")} == expected_ids(eng, LONG, "d")
    eng.close()


def _folder(root: Path, name: str, files: dict[str, str]) -> Path:
    d = root / name
    d.mkdir()
    for fname, text in files.items():
        (d / fname).write_text(text, encoding="utf-8")
    return d


def test_same_relative_path_in_two_folders_is_a_clash_not_a_replacement(fake_engine: Any, tmp_path: Path) -> None:
    """Item 6: `ingest a/ --source-id kb` then `ingest b/ --source-id kb` (both with faq.md)."""
    a = _folder(tmp_path, "a", {"faq.md": "# A\n甲方的常见问题：发票怎么开？"})
    b = _folder(tmp_path, "b", {"faq.md": "# B\n乙方的常见问题：合同怎么签？"})
    assert fake_engine.ingest([a], public=True, source_id="kb").documents == 1
    rep = fake_engine.ingest([b], public=True, source_id="kb")
    assert rep.documents == 0 and len(rep.failed) == 1
    msg = rep.failed[0].error
    assert "already stored from" in msg and "--source-id" in msg and "cjkrag delete" in msg
    assert [h.doc_id for h in fake_engine.search("发票", principals=[], mode="keyword")] == ["kb:faq.md"]
    # without a namespace the second folder is no silent replacement either (ids differ, or it is refused)
    rep2 = fake_engine.ingest([b], public=True)
    assert fake_engine.search("发票", principals=[], mode="keyword")
    assert rep2.documents == 1 or "already stored from" in rep2.failed[0].error
    with pytest.raises(InputError):
        fake_engine.ingest([b], public=True, source_id="bad name!")


def test_delete_documents_refuses_a_bare_string(fake_engine: Any) -> None:
    """Item 8c: "ab" used to delete documents a and b."""
    fake_engine.ingest([{"id": i, "text": f"文档{i}的内容。", "public": True} for i in ("a", "b", "ab")])
    with pytest.raises(InputError, match=r"\['ab'\]"):
        fake_engine.delete_documents("ab")
    assert {r["doc_id"] for r in fake_engine.store.query(None, ["doc_id"])} == {"a", "b", "ab"}
    assert fake_engine.delete_documents(["ab"]) == 1
    assert {r["doc_id"] for r in fake_engine.store.query(None, ["doc_id"])} == {"a", "b"}
    assert fake_engine.ingest([{"id": "ab", "text": "文档ab的内容。", "public": True}]).documents == 1


def test_sync_dry_run_guard_and_delete(fake_engine: Any, tmp_path: Path) -> None:
    d = _folder(tmp_path, "kb", {f"f{i}.txt": f"第{i}篇：报销流程说明。" for i in range(4)})
    assert fake_engine.ingest([d], public=True, sync=True).documents == 4
    (d / "f0.txt").unlink()
    dry = fake_engine.ingest([d], public=True, sync=True, dry_run=True)
    assert len(dry.planned_deletes) == 1 and dry.planned_deletes[0].endswith("f0.txt")
    assert fake_engine.store.count() == 4  # the dry run deleted nothing
    rep = fake_engine.ingest([d], public=True, sync=True)
    assert rep.deleted_documents == dry.planned_deletes and rep.unchanged == 3
    assert fake_engine.store.count() == 3
    for i in (1, 2, 3):
        (d / f"f{i}.txt").unlink()
    (d / "new.txt").write_text("新的文档。", encoding="utf-8")
    refused = fake_engine.ingest([d], public=True, sync=True)  # 3 of 4 documents: over the 50% guard
    assert refused.failed and "guard" in refused.failed[0].error and "--yes" in refused.failed[0].fix
    assert fake_engine.store.count() == 4 and refused.documents == 1
    ok = fake_engine.ingest([d], public=True, sync=True, yes=True)
    assert len(ok.deleted_documents) == 3 and fake_engine.store.count() == 1
    # a file that fails to read is not "gone": --sync keeps its stored document
    (d / "new.txt").write_bytes(b"\x00\x01\x02" * 50)
    kept = fake_engine.ingest([d], public=True, sync=True, yes=True)
    assert not kept.deleted_documents and fake_engine.store.count() == 1


def test_bad_files_are_reported_and_the_job_completes(tmp_path: Path) -> None:
    eng = make_engine(tmp_path / "data", ingest={"max_file_bytes": 8 * 1024 * 1024})
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.txt").write_text("退货请在三十天内申请。", encoding="utf-8")
    (folder / "invalid.txt").write_bytes("退货".encode() + b"\xff\xfe\xfa" * 10 + b"\x80\x81")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (folder / "empty.txt").write_bytes(b"")
    with (folder / "huge.txt").open("wb") as f:
        f.truncate(50 * 1024 * 1024)  # 50 MB (sparse): never read, reported over the limit
    rep = eng.ingest([folder], public=True)
    eng.close()
    assert rep.documents == 1
    by_file = {Path(f.path or f.source).name: f for f in rep.failures}
    assert {"invalid.txt", "binary.txt", "empty.txt", "huge.txt"} <= set(by_file)
    assert all(f.error and f.fix for f in by_file.values())
    assert "limit" in by_file["huge.txt"].error
    assert rep.exit_code() == 3
