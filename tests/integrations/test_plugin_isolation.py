"""`import cjkrag` loads no framework; each plugin works with only its own framework installed; a missing
framework is an error naming the extra. Each case runs in a fresh interpreter (the fake embedder keeps it fast)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("langchain", "langchain_core", "langchain_community", "llama_index")


def python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
    )


def test_import_cjkrag_loads_no_framework(tmp_path: Path) -> None:
    result = python(
        f"""
        import sys
        import cjkrag, cjkrag.engine, cjkrag.pipeline.integrations
        engine = cjkrag.open({{"data_dir": "data", "embedding": {{"model": "fake:64"}}}})
        engine.ingest([{{"id": "a", "text": "如何重置密码", "acl": ["group:x"]}}])
        assert engine.search("重置密码", principals=["group:x"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})
        print("loaded:", loaded)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: []"


BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None  # as if not installed\n"


@pytest.mark.parametrize(
    ("plugin", "other", "code"),
    [
        (
            "langchain",
            ("llama_index",),
            """
            from langchain_core.documents import Document
            from cjkrag.pipeline.integrations.langchain import CjkragRetriever
            engine.ingest([Document(id="d1", page_content="如何重置密码：打开设置页面。")], acl=["group:x"])
            docs = CjkragRetriever(engine=engine, principals=["group:x"], k=1).invoke("重置密码")
            print([d.metadata["doc_id"] for d in docs])
            """,
        ),
        (
            "llamaindex",
            ("langchain", "langchain_core"),
            """
            from llama_index.core import Document
            from cjkrag.pipeline.integrations.llamaindex import CjkragRetriever
            engine.ingest([Document(id_="d1", text="如何重置密码：打开设置页面。")], acl=["group:x"])
            nodes = CjkragRetriever(engine, principals=["group:x"], similarity_top_k=1).retrieve("重置密码")
            print([n.node.ref_doc_id for n in nodes])
            """,
        ),
    ],
)
def test_each_plugin_works_without_the_other_framework(tmp_path: Path, plugin: str, other: tuple[str, ...], code: str) -> None:
    pytest.importorskip("langchain_core" if plugin == "langchain" else "llama_index.core", reason=f"extra {plugin} not installed")
    setup = BLOCK.format(names=list(other)) + (
        "import cjkrag\n"
        'engine = cjkrag.open({"data_dir": "data", "embedding": {"model": "fake:64"}})\n'
    )
    result = python(setup + textwrap.dedent(code), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['d1']"


@pytest.mark.parametrize(("module", "blocked", "extra"), [("langchain", "langchain_core", "langchain"), ("llamaindex", "llama_index", "llamaindex")])
def test_a_missing_framework_names_the_extra(tmp_path: Path, module: str, blocked: str, extra: str) -> None:
    result = python(
        BLOCK.format(names=[blocked])
        + textwrap.dedent(
            f"""
            from cjkrag.errors import MissingDependency
            try:
                import cjkrag.pipeline.integrations.{module}
            except MissingDependency as exc:
                print(exc)
            """
        ),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install 'cjkrag[{extra}]'" in result.stdout
