"""Legacy CJK encodings (issue 8a): a file is decoded only when the decoding is evidently right; otherwise
it is reported with --encoding as the fix. Never stored as mojibake and counted as success."""

from __future__ import annotations

from pathlib import Path

import pytest

from cjkrag.errors import InputError
from cjkrag.ingest.readers import ReadFailure, decode_bytes, iter_documents
from cjkrag.ingest.readers.encoding import CJK_ENCODINGS, MIN_MARGIN_NATS, rank_cjk_decodings
from cjkrag.types import Document

# the exact cases of the review, plus a 53-character EUC-JP paragraph
REVIEW_CASES = [
    ("你好，世界。", "gb18030"),
    ("東京都は日本の首都です。", "euc_jp"),
    ("東京都は日本の首都です。人口は約千四百万人で、政治と経済の中心として多くの企業が集まっています。", "euc_jp"),
    ("학교", "euc_kr"),
]
SAMPLES = {
    "zh": ["密码", "今天天气很好", "请在登录页面点击忘记密码，系统会发送验证邮件。",
           "如果您忘记了密码，请在登录页面点击“忘记密码”。系统会向您的注册邮箱发送一封验证邮件，请在三十分钟内完成重置。"],
    "zh-Hant": ["密碼", "今天天氣很好", "請在登入頁面點擊忘記密碼，系統會發送驗證郵件。",
                "如果您忘記了密碼，請在登入頁面點擊「忘記密碼」。系統會向您的註冊信箱發送一封驗證郵件，請在三十分鐘內完成重設。"],
    "ja": ["東京", "今日は晴れです", "パスワードを忘れた場合は、ログイン画面のリンクを押してください。",
           "パスワードを忘れた場合は、ログイン画面の「パスワードを忘れた方」を押してください。登録したメールアドレスに確認メールが届きます。"],
    "ko": ["학교", "오늘 날씨가 좋다", "비밀번호를 잊어버린 경우 로그인 화면에서 링크를 누르세요.",
           "비밀번호를 잊어버린 경우 로그인 화면에서 비밀번호 재설정 링크를 누르세요. 등록된 메일 주소로 확인 메일이 발송됩니다."],
}  # fmt: skip
#: the encoding each language is normally written in: from a medium length on, these must be decoded
NATIVE = {"zh": ("gb18030",), "zh-Hant": ("big5",), "ja": ("shift_jis", "cp932", "euc_jp"), "ko": ("euc_kr", "cp949")}
ALL_CODECS = ("gb18030", "gbk", "big5", "big5hkscs", "shift_jis", "cp932", "euc_jp", "euc_kr", "cp949")


def _read(tmp_path: Path, data: bytes, **kw: object) -> Document | ReadFailure:
    path = tmp_path / "doc.txt"
    path.write_bytes(data)
    (item,) = list(iter_documents([path], **kw))  # type: ignore[arg-type]
    return item


@pytest.mark.parametrize(("text", "encoding"), REVIEW_CASES, ids=[f"{e}-{len(t)}" for t, e in REVIEW_CASES])
def test_review_cases_are_never_stored_as_mojibake(tmp_path: Path, text: str, encoding: str) -> None:
    item = _read(tmp_path, text.encode(encoding))
    if isinstance(item, Document):
        assert item.text == text, f"stored mojibake {item.text!r} ({item.metadata['encoding']})"
    else:
        assert item.kind == "failed" and "not detected confidently" in item.error
        assert "--encoding" in item.fix


@pytest.mark.parametrize(("text", "encoding"), REVIEW_CASES[:3], ids=["gb18030-6", "euc_jp-12", "euc_jp-53"])
def test_review_cases_with_clear_evidence_are_decoded(tmp_path: Path, text: str, encoding: str) -> None:
    item = _read(tmp_path, text.encode(encoding))
    assert isinstance(item, Document), item
    assert item.text == text


def test_two_hangul_syllables_are_refused_with_the_likely_encoding(tmp_path: Path) -> None:
    # b"\xc7\xd0\xb1\xb3" is 학교 in EUC-KR and 切背 in GB18030: two characters cannot tell them apart
    item = _read(tmp_path, "학교".encode("euc_kr"))
    assert isinstance(item, ReadFailure) and item.kind == "failed"
    assert "cp949" in item.error and "--encoding cp949" in item.fix
    fixed = _read(tmp_path, "학교".encode("euc_kr"), encoding="euc_kr")
    assert isinstance(fixed, Document) and fixed.text == "학교" and fixed.metadata["encoding"] == "euc_kr"


@pytest.mark.parametrize("lang", list(SAMPLES))
@pytest.mark.parametrize("codec", ALL_CODECS)
def test_every_codec_and_language_decodes_right_or_refuses(lang: str, codec: str) -> None:
    decoded = refused = 0
    for text in SAMPLES[lang]:
        try:
            data = text.encode(codec)
        except UnicodeEncodeError:
            continue  # this codec cannot write this text at all
        try:
            got, enc = decode_bytes(data, "sample")
        except InputError as exc:
            assert "--encoding" in str(exc)
            refused += 1
            continue
        assert got == text, f"{codec} {lang} {len(text)} chars decoded as {enc}: {got!r}"
        decoded += 1
    if codec in NATIVE[lang]:  # the longer samples in a language's own encoding are always decoded
        assert decoded >= 2, (codec, lang, decoded, refused)


@pytest.mark.parametrize("lang", list(SAMPLES))
def test_native_medium_and_long_samples_win_by_a_clear_margin(lang: str) -> None:
    for codec in NATIVE[lang]:
        for text in SAMPLES[lang][2:]:
            ranked = rank_cjk_decodings(text.encode(codec))
            assert ranked[0].language == lang or (lang == "zh-Hant" and ranked[0].language == "zh")
            if len(ranked) > 1:  # else no other codec decodes it at all
                assert ranked[1].nats - ranked[0].nats >= MIN_MARGIN_NATS


def test_user_encoding_wins_and_a_wrong_one_fails_naming_it(tmp_path: Path) -> None:
    text = SAMPLES["ja"][3]
    ok = _read(tmp_path, text.encode("euc_jp"), encoding="euc_jp")
    assert isinstance(ok, Document) and ok.text == text and ok.metadata["encoding"] == "euc_jp"
    bad = _read(tmp_path, text.encode("euc_jp"), encoding="ascii")
    assert isinstance(bad, ReadFailure) and "not valid ascii" in bad.error and "euc_jp" in bad.error
    with pytest.raises(InputError, match="not a known encoding"):
        list(iter_documents([tmp_path], encoding="no-such-codec"))


def test_html_declared_charset_and_bom_still_win(tmp_path: Path) -> None:
    text = SAMPLES["zh"][3]
    assert decode_bytes(b"\xef\xbb\xbf" + text.encode(), "x") == (text, "utf-8-sig")
    assert decode_bytes(text.encode("gb18030"), "x", declared="gbk") == (text, "gbk")


def test_candidates_are_every_clean_decoding() -> None:
    data = SAMPLES["ko"][3].encode("euc_kr")
    ranked = rank_cjk_decodings(data)
    encodings = [c.encoding for c in ranked]
    assert encodings[0] == "cp949" and set(encodings) <= set(CJK_ENCODINGS)
    for cand in ranked:
        data.decode(cand.encoding)  # every candidate really decodes
    assert len({data.decode(c.encoding) for c in ranked}) == len(ranked)  # distinct texts only
