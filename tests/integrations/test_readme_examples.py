"""The README's LangChain and LlamaIndex examples, run as written (in a fresh folder, so `cjkrag.open()`
stores under it). The bundled model is the real one; it is loaded once for the session and shared."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(section: str) -> str:
    """The first ```python block under the README heading ``## <section>``."""
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, f"README has no section '## {section}'"
    block = re.search(r"```python\n(.*?)```", m.group(1), re.S)
    assert block, f"README section '{section}' has no python example"
    return block.group(1)


def run(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CJKRAG_DATA_DIR", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "cjkrag-data").is_dir()  # the example wrote where it says
    return out.getvalue()


def test_langchain_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, share_bundled_model: None) -> None:
    pytest.importorskip("langchain_core", reason="the 'langchain' extra is not installed")
    code = readme_block("LangChain")
    assert 10 <= len(code.strip().splitlines()) <= 14
    printed = run(code, tmp_path, monkeypatch).splitlines()
    assert len(printed) == 1 and printed[0].endswith("如何重置密码：打开设置页面，点击“忘记密码”。")
    assert printed[0].split()[1].startswith("lc-")  # the doc id derived from source + text


def test_llamaindex_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, share_bundled_model: None) -> None:
    pytest.importorskip("llama_index.core", reason="the 'llamaindex' extra is not installed")
    code = readme_block("LlamaIndex")
    assert 10 <= len(code.strip().splitlines()) <= 14
    printed = run(code, tmp_path, monkeypatch)
    assert printed.startswith("[('pw-ja', ") and printed.count("pw-ja") == 1
