"""Reader tests on real files written to tmp_path: encodings, HTML, jsonl validation, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cjkrag.errors import InputError
from cjkrag.ingest.readers import (
    SUPPORTED_EXTENSIONS,
    ReadFailure,
    decode_bytes,
    iter_documents,
    iter_records,
)
from cjkrag.types import Document

ZH = "如果您忘记了密码，请在登录页面点击“忘记密码”。系统会向您的注册邮箱发送一封验证邮件。\n请在三十分钟内完成重置。"
ZH_HANT = "如果您忘記了密碼，請在登入頁面點擊「忘記密碼」。系統會向您的註冊信箱發送一封驗證郵件。"
JA = "パスワードを忘れた場合は、ログイン画面のリンクを押してください。確認メールが届きます。"
KO = "비밀번호를 잊어버린 경우 로그인 화면에서 비밀번호 재설정 링크를 누르세요. 확인 메일이 발송됩니다."

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _docs(items: list[Document | ReadFailure]) -> list[Document]:
    return [d for d in items if isinstance(d, Document)]


def _fails(items: list[Document | ReadFailure]) -> list[ReadFailure]:
    return [f for f in items if isinstance(f, ReadFailure)]


def _one(path: Path, **kw: object) -> Document | ReadFailure:
    items = list(iter_documents([path], **kw))  # type: ignore[arg-type]
    assert len(items) == 1, items
    return items[0]


# ------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize(
    ("text", "encoding"),
    [(ZH, "gb18030"), (ZH_HANT, "big5"), (JA, "shift_jis"), (JA, "euc_jp"), (KO, "euc_kr")],
    ids=["gb18030", "big5", "shift_jis", "euc_jp", "euc_kr"],
)
def test_legacy_cjk_encodings_are_detected(tmp_path: Path, text: str, encoding: str) -> None:
    path = tmp_path / f"doc-{encoding}.txt"
    path.write_bytes(text.encode(encoding))
    doc = _one(path)
    assert isinstance(doc, Document), doc
    assert doc.text == text
    assert doc.id == path.resolve().as_posix()
    assert doc.metadata["encoding"] != "utf-8"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_unicode_encodings_with_and_without_bom(tmp_path: Path, encoding: str) -> None:
    text = ZH + "\r\n" + JA + "\n" + KO
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data  # UTF-16 BE with its BOM
    path = tmp_path / "u.md"
    path.write_bytes(data)
    doc = _one(path)
    assert isinstance(doc, Document), doc
    assert doc.text == text  # BOM stripped, \r\n kept
    assert not doc.text.startswith("\ufeff")


def test_invalid_utf8_fails_with_iconv_fix(tmp_path: Path) -> None:
    path = tmp_path / "broken.txt"
    path.write_bytes("密码重置".encode() + b"\xff\xfe\xfd\x80\x81" + "说明".encode())
    fail = _one(path)
    assert isinstance(fail, ReadFailure) and fail.kind == "failed"
    assert fail.source == str(path)
    assert "UTF-8" in fail.error
    assert "iconv" in fail.fix and str(path) in fail.fix


def test_decode_bytes_raises_input_error_naming_source() -> None:
    with pytest.raises(InputError, match=r"data\.bin.*binary"):
        decode_bytes(b"abc\x00def", "data.bin")
    text, enc = decode_bytes(JA.encode("shift_jis"), "x")
    assert text == JA and enc in ("cp932", "shift_jis", "shift_jis_2004", "shift_jisx0213")


def test_binary_files_fail(tmp_path: Path) -> None:
    nul = tmp_path / "blob.txt"
    nul.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))
    pdf = tmp_path / "manual.txt"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj")
    for path, word in ((nul, "NUL"), (pdf, "PDF")):
        fail = _one(path)
        assert isinstance(fail, ReadFailure) and fail.kind == "failed"
        assert "binary" in fail.error and word in fail.error


def test_empty_and_whitespace_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_text(" \n\u3000\t\n", encoding="utf-8")
    (tmp_path / "empty.html").write_text("<html><head><title>t</title></head><body> </body></html>")
    items = list(iter_documents([tmp_path]))
    assert [(f.kind, Path(f.source).name) for f in _fails(items)] == [
        ("skipped", "blank.md"),
        ("skipped", "empty.html"),
        ("skipped", "empty.txt"),
    ]
    assert _docs(items) == []


# --------------------------------------------------------------------------------- paths & ids


def test_folder_walk_is_recursive_sorted_and_ids_are_absolute_paths(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "b" / "deep" / "z.md").write_text("# VPN 设置\n连接公司 VPN。", encoding="utf-8")
    (root / "a" / "y.txt").write_text(JA, encoding="utf-8")
    (root / "x.txt").write_text(KO, encoding="utf-8")
    (root / "drawing.vsdx").write_bytes(b"PK\x03\x04")
    (root / ".git").mkdir()
    (root / ".git" / "config.txt").write_text("hidden", encoding="utf-8")
    items = list(iter_documents([root], default_acl=["group:eng"], default_public=False))
    docs = _docs(items)
    assert [d.id for d in docs] == [(root / p).resolve().as_posix() for p in ("a/y.txt", "b/deep/z.md", "x.txt")]
    assert [d.source for d in docs] == [str(root / p) for p in ("a/y.txt", "b/deep/z.md", "x.txt")]
    kb = _docs(list(iter_documents([root], source_id="kb")))
    assert [d.id for d in kb] == ["kb:a/y.txt", "kb:b/deep/z.md", "kb:x.txt"]
    assert all(d.acl == ("group:eng",) and not d.public for d in docs)
    assert docs[1].title == "VPN 设置"
    assert docs[0].title == "y"
    skipped = _fails(items)
    assert [(f.kind, Path(f.source).name) for f in skipped] == [("skipped", "drawing.vsdx")]
    assert ".txt" in skipped[0].fix
    # stable across runs
    assert [d.id for d in _docs(list(iter_documents([root])))] == [d.id for d in docs]


def test_unknown_extension_given_explicitly_fails(tmp_path: Path) -> None:
    path = tmp_path / "notes.odt"
    path.write_bytes(b"PK\x03\x04")
    fail = _one(path)
    assert isinstance(fail, ReadFailure) and fail.kind == "failed"
    assert all(ext in fail.fix for ext in SUPPORTED_EXTENSIONS)


def test_missing_path_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "x.md"
    fail = _one(missing)
    assert isinstance(fail, ReadFailure) and fail.kind == "failed"
    assert fail.source == str(missing) and "does not exist" in fail.error


def test_too_big_file_fails_with_fix(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("密码" * 100, encoding="utf-8")
    fail = _one(path, max_bytes=100)
    assert isinstance(fail, ReadFailure) and fail.kind == "failed"
    assert "limit" in fail.error and "max_bytes" in fail.fix


def test_same_relative_path_in_two_folders_gets_two_ids(tmp_path: Path) -> None:
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "faq.md").write_text(f"# {sub}\n内容", encoding="utf-8")
    one = _docs(list(iter_documents([tmp_path / "one"])))
    two = _docs(list(iter_documents([tmp_path / "two"])))
    assert [d.id for d in one] == [(tmp_path / "one" / "faq.md").resolve().as_posix()]
    assert one[0].id != two[0].id  # ingesting b/ after a/ no longer replaces a/faq.md
    # a relative path given from another working directory resolves to the same id
    assert [d.id for d in _docs(list(iter_documents([Path(os.path.relpath(tmp_path / "one"))])))] == [one[0].id]
    # under one namespace the same relative path is one id: the second is reported, not silently kept
    items = list(iter_documents([tmp_path / "one", tmp_path / "two"], source_id="kb"))
    assert [d.id for d in _docs(items)] == ["kb:faq.md"]
    (fail,) = _fails(items)
    assert "duplicate" in fail.error and fail.source.endswith("two/faq.md") and "--source-id" in fail.fix


@pytest.mark.parametrize("bad", ["", "a b", "kb:x", "../kb", "x" * 65, "-kb"])
def test_invalid_source_id_is_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / "a.txt").write_text("内容", encoding="utf-8")
    with pytest.raises(InputError, match="source id"):
        list(iter_documents([tmp_path], source_id=bad))


# ------------------------------------------------------------------------------------------ html


def test_html_text_title_and_dropped_scripts(tmp_path: Path) -> None:
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>退款政策 | 帮助中心</title>"
        "<style>body{color:red}</style><script>var secret = 'do not index';</script></head>"
        "<body><h1>退款政策</h1><p>收到商品后 <b>7 天内</b>可以申请退款。</p>"
        "<ul><li>未拆封商品全额退款</li><li>已拆封商品收取 10% 手续费</li></ul>"
        "<noscript>enable js</noscript></body></html>"
    )
    path = tmp_path / "refund.html"
    path.write_text(html, encoding="utf-8")
    doc = _one(path)
    assert isinstance(doc, Document), doc
    assert doc.title == "退款政策 | 帮助中心"
    assert "secret" not in doc.text and "color" not in doc.text and "enable js" not in doc.text
    assert "收到商品后 7 天内可以申请退款。" in doc.text  # inline tags do not break the sentence
    assert doc.text.splitlines()[:2] == ["退款政策", ""]
    assert "未拆封商品全额退款\n" in doc.text


def test_html_meta_charset_is_used(tmp_path: Path) -> None:
    html = f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS"><title>案内</title></head><body><p>{JA}</p></body></html>'
    path = tmp_path / "ja.htm"
    path.write_bytes(html.encode("shift_jis"))
    doc = _one(path)
    assert isinstance(doc, Document), doc
    assert doc.title == "案内" and JA in doc.text and doc.metadata["encoding"] == "shift_jis"


# ----------------------------------------------------------------------------------------- jsonl


def test_jsonl_records_and_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "pw-1", "text": ZH, "title": "密码重置", "acl": ["group:support"],
                    "metadata": {"category": "account"}, "language": "zh-Hans", "tenant": "acme"}),
        json.dumps({"id": 42, "text": JA, "public": True}),
        "",
        "{not json",
        json.dumps({"text": "no id"}),
        json.dumps({"id": "x", "text": "t", "acl": "group:hr"}),
        json.dumps({"id": "y", "text": "t", "public": "yes"}),
        json.dumps({"id": "z", "text": "t", "acls": ["group:hr"]}),
        json.dumps({"id": "w", "text": "   "}),
        json.dumps(["id", "text"]),
        json.dumps({"id": "ko", "text": KO, "deny": ["user:mallory"]}),
    ]  # fmt: skip
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = list(iter_documents([path], default_acl=["group:all"]))
    docs = _docs(items)
    assert [d.id for d in docs] == ["pw-1", "42", "ko"]
    pw, ja, ko = docs
    assert pw.acl == ("group:support",) and pw.title == "密码重置" and pw.metadata == {"category": "account"}
    assert pw.language == "zh" and pw.tenant == "acme" and pw.source == f"{path}:1"
    assert ja.public and ja.acl == ("group:all",)  # default acl where the record sets none
    assert ko.deny == ("user:mallory",) and ko.acl == ("group:all",)
    fails = {f.source.rsplit(":", 1)[1]: f for f in _fails(items)}
    assert set(fails) == {"4", "5", "6", "7", "8", "9", "10"}
    assert "invalid JSON" in fails["4"].error
    assert "'id'" in fails["5"].error
    assert "'acl'" in fails["6"].error and '["group:support"' in fails["6"].fix
    assert "'public'" in fails["7"].error
    assert "'acls'" in fails["8"].error and "metadata" in fails["8"].fix
    assert fails["9"].kind == "skipped"
    assert "object" in fails["10"].error
    assert all(f.kind == "failed" for k, f in fails.items() if k != "9")


def test_jsonl_non_utf8_line_fails_other_lines_continue(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"id": "a", "text": ZH}, ensure_ascii=False).encode()
    bad = json.dumps({"id": "b", "text": ZH}, ensure_ascii=False).encode("utf-8").decode().encode("gb18030")
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n" + bad + b"\n" + good.replace(b'"a"', b'"c"'))
    items = list(iter_documents([path]))
    assert [d.id for d in _docs(items)] == ["a", "c"]
    (fail,) = _fails(items)
    assert fail.source == f"{path}:2" and "UTF-8" in fail.error


def test_iter_records_validates_like_jsonl() -> None:
    recs: list[dict[str, Any]] = [
        {"id": "a", "text": ZH, "public": True},
        {"id": "a", "text": JA, "public": True},
        {"id": "b", "text": KO, "metadata": "oops"},
        {"id": True, "text": KO},
    ]
    items = list(iter_records(recs, default_acl=("group:support",)))
    assert [d.id for d in _docs(items)] == ["a"]
    assert [f.source for f in _fails(items)] == ["<record>[1]", "<record>[2]", "<record>[3]"]
    assert "duplicate" in _fails(items)[0].error and "'metadata'" in _fails(items)[1].error


def test_default_acl_must_be_a_list() -> None:
    with pytest.raises(InputError, match="default_acl"):
        list(iter_records([{"id": "a", "text": "x"}], default_acl="group:x"))


# ---------------------------------------------------------------------------------------- sample


def test_sample_corpus_reads_cleanly() -> None:
    if not (SAMPLES / "corpus.jsonl").exists():
        pytest.skip("samples/ not present")
    items = list(iter_documents([SAMPLES / "corpus.jsonl", SAMPLES / "docs"], default_acl=["group:all"]))
    assert _fails(items) == []
    docs = _docs(items)
    assert len(docs) >= 30
    encodings = {d.id: d.metadata.get("encoding") for d in docs if d.source.endswith(".txt")}
    assert "gb18030" in encodings.values() and "cp932" in encodings.values(), encodings
    assert all(d.acl or d.public for d in docs)


# ---------------------------------------------------------------------------------------- big file


def test_50mb_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    line = (ZH + "\n").encode("utf-8")
    reps = 50 * 1024 * 1024 // len(line) + 1
    with path.open("wb") as f:
        f.write(line * reps)
    doc = _one(path)
    assert isinstance(doc, Document), doc
    assert len(doc.text) == len(ZH + "\n") * reps
