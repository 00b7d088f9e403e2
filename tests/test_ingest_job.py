"""The ingestion job over real Milvus Lite + the real analyzer (FakeEmbedder for speed).

Idempotent, incremental, resumable; one bad document never stops or corrupts a job; deny by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cjkrag.connectors.filters import Condition
from cjkrag.errors import StoreError

DOCS = [
    {"id": "zh-1", "text": "如何重置密码：打开设置页面，点击“忘记密码”。系统会发送验证码到您的邮箱。", "acl": ["group:support"]},
    {"id": "ja-1", "text": "パスワードを忘れた場合は、ログイン画面の「パスワードを再設定」を押してください。", "acl": ["group:support"]},
    {"id": "ko-1", "text": "비밀번호를 잊어버린 경우 로그인 화면에서 재설정을 누르세요.", "public": True},
    {"id": "hr-1", "text": "年假政策：员工每年享有十五天带薪年假。", "acl": ["group:hr"]},
]


def chunks_of(engine: Any, doc_id: str) -> list[dict[str, Any]]:
    return engine.store.query(Condition("doc_id", "==", doc_id), ["chunk_id", "acl", "public", "doc_hash"])


def test_ingest_is_idempotent_and_incremental(fake_engine: Any) -> None:
    first = fake_engine.ingest(DOCS)
    assert first.documents == 4 and not first.failures
    total = fake_engine.store.count()
    assert total == first.chunks >= 4

    again = fake_engine.ingest(DOCS)
    assert again.documents == 0 and again.unchanged == 4 and again.chunks == 0
    assert fake_engine.store.count() == total

    changed = [dict(DOCS[0], text=DOCS[0]["text"] + "如果没有收到邮件，请联系客服。"), *DOCS[1:]]
    third = fake_engine.ingest(changed)
    assert third.documents == 1 and third.unchanged == 3
    texts = [h.text for h in fake_engine.search("客服", principals=["group:support"], mode="keyword")]
    assert any("联系客服" in t for t in texts)


def test_acl_change_takes_effect_for_all_chunks(fake_engine: Any) -> None:
    long_text = "。".join(f"第{i}条：密码重置流程说明，请按步骤操作" for i in range(400)) + "。"
    doc = {"id": "long", "text": long_text, "acl": ["group:a"]}
    fake_engine.ingest([doc])
    before = chunks_of(fake_engine, "long")
    assert len(before) > 1 and all(r["acl"] == ["group:a"] for r in before)
    assert fake_engine.search("密码重置", principals=["group:a"], mode="keyword")

    fake_engine.ingest([dict(doc, acl=["group:b"])])
    after = chunks_of(fake_engine, "long")
    assert {r["chunk_id"] for r in after} == {r["chunk_id"] for r in before}
    assert all(r["acl"] == ["group:b"] for r in after)
    for mode in ("dense", "keyword", "hybrid"):
        assert fake_engine.search("密码重置", principals=["group:a"], mode=mode) == []
        assert fake_engine.search("密码重置", principals=["group:b"], mode=mode)


def test_document_without_access_rule_is_refused_not_stored(fake_engine: Any) -> None:
    rep = fake_engine.ingest([{"id": "orphan", "text": "没有权限规则的文档。"}, DOCS[2]])
    assert rep.documents == 1
    assert len(rep.failed) == 1 and "'orphan'" in rep.failed[0].source
    assert "no access rule" in rep.failed[0].error
    assert chunks_of(fake_engine, "orphan") == []


def test_default_acl_applies_to_files(fake_engine: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# VPN\n连接公司VPN需要先安装客户端。", encoding="utf-8")
    rep = fake_engine.ingest([folder], acl=["group:eng"])
    assert rep.documents == 1
    rows = fake_engine.store.query(None, ["doc_id", "acl"])
    assert [r["acl"] for r in rows if r["doc_id"] == (folder / "a.md").resolve().as_posix()] == [["group:eng"]]


def test_bad_documents_do_not_stop_the_job(fake_engine: Any, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.txt").write_text("退货请在三十天内申请。", encoding="utf-8")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02\xff" * 100)
    (folder / "bad.txt").write_bytes("退货".encode() + b"\xff\xfe\xfa" * 10 + b"\x80\x81")
    (folder / "empty.txt").write_text("   \n", encoding="utf-8")
    rep = fake_engine.ingest([folder, tmp_path / "missing.txt"], public=True)
    assert rep.documents == 1
    failed_sources = " ".join(f.source for f in rep.failed)
    assert "binary.txt" in failed_sources and "missing.txt" in failed_sources
    assert all(f.error for f in rep.failures)
    assert fake_engine.search("退货", principals=[], mode="keyword")[0].doc_id == (folder / "good.txt").resolve().as_posix()


class FailingStore:
    """Fault injection around the real store: upserts fail after ``budget`` calls (a crash mid-job)."""

    def __init__(self, inner: Any, budget: int) -> None:
        self.inner, self.budget = inner, budget

    def upsert(self, records: Any) -> None:
        if self.budget <= 0:
            raise StoreError("injected failure")
        self.budget -= 1
        self.inner.upsert(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_failed_run_loses_nothing_and_resumes(fake_engine: Any) -> None:
    from cjkrag.ingest.job import IngestJob
    from cjkrag.ingest.readers import iter_records

    fake_engine.ingest(DOCS)
    stored = {r["chunk_id"] for r in fake_engine.store.query(None, ["chunk_id"])}
    edited = [dict(d, text=d["text"] + "（已更新）") for d in DOCS]
    job = IngestJob(
        store=FailingStore(fake_engine.store, budget=1),  # type: ignore[arg-type]
        embedder=fake_engine.embedder,
        analyzer=fake_engine.analyzer,
        batch_size=1,
        settings_tag="t",
    )
    rep = job.run(iter_records(edited))
    assert rep.failed, "the injected failure must be reported"
    # nothing previously searchable was lost: every document still has chunks
    for d in DOCS:
        assert chunks_of(fake_engine, d["id"]), d["id"]
    job.store = fake_engine.store
    rep2 = job.run(iter_records(edited))
    assert not rep2.failed
    now = fake_engine.store.query(None, ["chunk_id", "doc_id", "doc_hash"])
    assert len({r["doc_hash"] for r in now if r["doc_id"] == "zh-1"}) == 1  # stale chunks were removed
    assert {r["chunk_id"] for r in now} != stored


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_search_returns_offsets_into_the_source(fake_engine: Any, mode: str) -> None:
    fake_engine.ingest(DOCS)
    texts = {d["id"]: d["text"] for d in DOCS}
    hits = fake_engine.search("重置密码", principals=["group:support"], mode=mode, top_k=5)
    assert hits
    for h in hits:
        assert texts[h.doc_id][h.start : h.end] == h.text
        assert h.doc_id != "hr-1"


def test_embedding_batches_bound_budget_count_and_padding() -> None:
    from types import SimpleNamespace

    from cjkrag.ingest.stages import _token_batches

    lengths = [5, 6, 6, 7, 40, 41, 42, 43, 44, 300, 310, 512]
    w = SimpleNamespace(chunks=[SimpleNamespace(token_count=t) for t in lengths])
    items: list[Any] = [(w, i) for i in range(len(lengths))]
    batches = _token_batches(items, budget=1024, max_count=4, max_waste=0.15)
    assert [i for b in batches for _, i in b] == list(range(len(lengths)))  # order kept, nothing lost
    for b in batches:
        ts = [lengths[i] for _, i in b]
        assert (len(b) <= 4 and len(b) * max(ts) <= 1024) or len(b) == 1
        assert len(b) == 1 or len(b) * max(ts) - sum(ts) <= 0.15 * len(b) * max(ts)  # padding under 15%
    assert [[lengths[i] for _, i in b] for b in batches] == [[5, 6, 6, 7], [40, 41, 42, 43], [44], [300, 310], [512]]
    # without the padding cap, short and long chunks share a batch (the old behaviour)
    assert len(_token_batches(items, budget=10**6)) == 1
