"""Outlook .msg files written at test time by tools/make_msg.py (an OLE compound file with MAPI properties
per [MS-CFB] / [MS-OXMSG]; no Outlook, no committed binary), read by the mail reader through extract-msg:
CJK subject, sender/recipients/date, a body long enough to leave the mini stream, text attachments as child
documents with the message's access rule and their citations, an HTML-only body."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cjkrag.ingest.citations import cite
from cjkrag.ingest.readers import ReadFailure, iter_documents
from cjkrag.types import Document

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

if importlib.util.find_spec("extract_msg") is None:
    pytest.skip("extract-msg not installed: pip install -e '.[email]'", allow_module_level=True)

import make_format_corpus as corpus  # noqa: E402
from make_msg import write_msg  # noqa: E402

SUBJECT = "关于退货运费的通知（社内連絡）"
BODY = corpus.PASSAGES[0][3]
FILLER = "\n".join(f"第{i}条：请各部门按照新的退货规定处理客户的申请，并在系统中登记处理结果。" for i in range(1, 80))
ATT_JA = corpus.PASSAGES[1][3]
ATT_KO = corpus.PASSAGES[2][3]
CST = timezone(timedelta(hours=8))


@pytest.fixture
def msg_path(tmp_path: Path) -> Path:
    path = tmp_path / "notice.msg"
    write_msg(
        path, subject=SUBJECT, sender=("客服部", "support@example.com"),
        to=[("全体员工", "all@example.com"), ("山田太郎", "yamada@example.jp")],
        date=datetime(2026, 12, 1, 9, 30, tzinfo=CST), body=f"{BODY}\n\n{FILLER}",
        attachments=[
            ("返品規定.txt", ATT_JA.encode("shift_jis"), "text/plain"),  # a legacy encoding, detected
            ("배송안내.html", f"<html><body><h1>안내</h1><p>{ATT_KO}</p><script>x()</script></body></html>".encode(),
             "text/html"),
            ("logo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 5000, "image/png"),  # over the mini-stream cutoff
        ],
    )  # fmt: skip
    return path


def read(path: Path, **kw: Any) -> list[Document | ReadFailure]:
    return list(iter_documents([path], default_acl=["group:staff"], **kw))


def where(doc: Document) -> dict[str, Any]:
    return cite(doc.metadata["_spans"], 0, len(doc.text))


def test_the_file_is_a_compound_file_extract_msg_reads(msg_path: Path) -> None:
    import extract_msg
    import olefile

    assert olefile.isOleFile(str(msg_path))
    with olefile.OleFileIO(str(msg_path)) as ole:
        assert ole.exists("__substg1.0_0037001F") and ole.exists("__attach_version1.0_#00000002/__substg1.0_37010102")
        assert len(ole.openstream("__substg1.0_1000001F").read()) > 4096  # the body is in regular sectors
    msg = extract_msg.openMsg(str(msg_path))
    try:
        assert msg.subject == SUBJECT and msg.body.startswith(BODY) and len(msg.attachments) == 3
    finally:
        msg.close()


def test_msg_subject_metadata_body_and_attachment_children(msg_path: Path) -> None:
    items = read(msg_path, source_id="mail")
    assert not [f for f in items if isinstance(f, ReadFailure)], items
    docs = [d for d in items if isinstance(d, Document)]
    assert [d.id for d in docs] == ["mail:notice.msg", "mail:notice.msg#返品規定.txt", "mail:notice.msg#배송안내.html"]
    msg, ja, ko = docs
    assert msg.title == SUBJECT and msg.metadata["format"] == "msg"
    assert msg.metadata["from"] == "客服部 <support@example.com>"
    assert "全体员工" in msg.metadata["to"] and "山田太郎" in msg.metadata["to"]
    # the same instant; a .msg keeps its times in UTC (FILETIME), so that is what is reported
    assert datetime.fromisoformat(msg.metadata["date"]) == datetime(2026, 12, 1, 9, 30, tzinfo=CST)
    assert BODY in msg.text and "第79条" in msg.text and f"Subject: {SUBJECT}" in msg.text
    assert msg.metadata["attachments"] == ["返品規定.txt", "배송안내.html", "logo.png"]
    assert msg.metadata["attachments_not_indexed"] == ["logo.png"]
    assert where(msg) == {"section": [SUBJECT]}
    assert ja.text == ATT_JA and ja.metadata["encoding"] == "cp932"
    assert ATT_KO in ko.text and "x()" not in ko.text and "<p>" not in ko.text
    assert where(ja) == {"section": [SUBJECT, "返品規定.txt"], "attachment": "返品規定.txt"}
    for child in (ja, ko):
        assert child.acl == msg.acl == ("group:staff",) and child.deny == msg.deny and child.public is msg.public
        assert child.metadata["parent_id"] == msg.id and child.title.startswith(SUBJECT)


def test_msg_with_an_html_body_only(tmp_path: Path) -> None:
    path = tmp_path / "html.msg"
    html = f"<html><head><style>p{{color:red}}</style></head><body><h1>返品について</h1><p>{ATT_JA}</p></body></html>"
    write_msg(path, subject="HTML のみ", sender=("営業部", "sales@example.jp"), to=[("顧客", "c@example.jp")],
              date=datetime(2026, 12, 2, tzinfo=timezone.utc), body="", html=html)  # fmt: skip
    (doc,) = read(path)
    assert isinstance(doc, Document), doc
    assert ATT_JA in doc.text and "返品について" in doc.text and "color" not in doc.text and doc.title == "HTML のみ"


def test_query_cites_the_message_and_its_attachment(msg_path: Path, tmp_path: Path) -> None:
    from tests.conftest import make_engine

    engine = make_engine(tmp_path / "data", chunking={"max_tokens": 64, "overlap_tokens": 0})
    try:
        rep = engine.ingest([msg_path], acl=["group:staff"])
        assert not rep.failed and rep.documents == 3, rep
        hits = engine.search("返品の送料はお客様のご負担", principals=["group:staff"], mode="keyword", top_k=5)
        assert hits[0].doc_id.endswith("notice.msg#返品規定.txt")
        assert hits[0].metadata["section"] == [SUBJECT, "返品規定.txt"] and hits[0].metadata["attachment"] == "返品規定.txt"
        hits = engine.search("忘记了密码 注册邮箱", principals=["group:staff"], mode="keyword", top_k=5)
        assert hits[0].doc_id.endswith("notice.msg") and hits[0].metadata["section"] == [SUBJECT]
        assert hits[0].metadata["from"] == "客服部 <support@example.com>" and "_spans" not in hits[0].metadata
        assert engine.search("返品", principals=["group:other"], mode="keyword") == []  # attachments keep the ACL
    finally:
        engine.close()
