"""One principal normal form on the way in: ingestion (every document, whatever its source) and queries."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest

from cjkrag.errors import AccessError
from cjkrag.ingest.records import normalize_access
from cjkrag.types import Document

NFC = "group:営業\u00e9"  # precomposed é
NFD = unicodedata.normalize("NFD", NFC)


def test_normalize_access_trims_nfc_dedupes_and_keeps_order() -> None:
    doc = Document(id="d1", text="x", acl=(f" {NFD}", "group:b", NFC), deny=("user:x\u3000", "user:y"))
    out = normalize_access(doc)
    assert out.acl == (NFC, "group:b") and out.deny == ("user:x", "user:y")
    same = Document(id="d2", text="x", acl=("group:a",))
    assert normalize_access(same) is same


@pytest.mark.parametrize(("field", "entries", "fragment"), [
    ("acl", ("group:a", "bad\nentry"), r"acl\[1\].*control character"),
    ("deny", ("  ",), r"deny\[0\].*empty once trimmed"),
    ("deny", ("u" * 300,), r"deny\[0\].*300 characters"),
])  # fmt: skip
def test_bad_entries_name_the_document_and_the_entry(field: str, entries: tuple[Any, ...], fragment: str) -> None:
    lists: dict[str, Any] = {"acl": ("group:a",), field: entries}
    doc = Document(id="faq-7", text="x", source="faq.jsonl:7", **lists)
    with pytest.raises(AccessError, match=fragment) as info:
        normalize_access(doc)
    assert "'faq-7'" in str(info.value) and "faq.jsonl:7" in str(info.value)


def test_ingestion_stores_normal_forms_and_reports_bad_documents(fake_engine: Any, tmp_path: Path) -> None:
    report = fake_engine.ingest([
        {"id": "ok", "text": "东京的天气", "acl": [NFD + " "], "deny": ["\ufeffuser:z"]},
        {"id": "bad", "text": "大阪的天气", "acl": ["group:a\x00"]},
        Document(id="given", text="京都的天气", acl=(f"\t{NFD}",)),
    ])  # fmt: skip
    assert report.documents == 2
    assert len(report.failed) == 1
    assert "'bad'" in report.failed[0].error and "acl[0]" in report.failed[0].error
    rows = {r["doc_id"]: r for r in fake_engine.store.query(None, ["doc_id", "acl", "deny"])}
    assert rows["ok"]["acl"] == [NFC] and rows["ok"]["deny"] == ["user:z"]
    assert rows["given"]["acl"] == [NFC]
    assert "bad" not in rows
    for who in ([NFC], [NFD], [f" {NFC} "]):
        assert {h.doc_id for h in fake_engine.search("天气", principals=who, top_k=5)} == {"ok", "given"}
    assert fake_engine.search("天气", principals=["user:z", NFC], top_k=5, mode="dense")[0].doc_id == "given"
