from __future__ import annotations

from pathlib import Path

import pytest

from cjkrag.config import load_config
from cjkrag.errors import ConfigError


def test_defaults_match_the_issue() -> None:
    cfg = load_config()
    assert cfg.chunking.max_tokens == 512
    assert cfg.chunking.overlap_tokens == 64
    assert cfg.embedding.model == "bundled:multilingual-e5-small"
    assert cfg.store.backend == "milvus"
    assert cfg.milvus_uri().endswith("milvus.db")


def test_data_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CJKRAG_DATA_DIR", str(tmp_path / "d"))
    assert load_config().milvus_uri() == str(tmp_path / "d" / "milvus.db")
    assert load_config({"store": {"milvus": {"uri": "http://milvus:19530"}}}).milvus_uri() == "http://milvus:19530"


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"retrieval\.fusion\.methd: unknown key"):
        load_config({"retrieval": {"fusion": {"methd": "rrf"}}})


def test_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match=r"chunking\.max_tokens"):
        load_config({"chunking": {"max_tokens": "many"}})
    with pytest.raises(ConfigError, match=r"retrieval\.fusion\.method"):
        load_config({"retrieval": {"fusion": {"method": "borda"}}})


def test_broken_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("collection: x\nstore: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML at line"):
        load_config(bad)


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(lst)


def test_yaml_overlay_keeps_other_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("collection: wiki\nretrieval:\n  top_k: 3\n", encoding="utf-8")
    cfg = load_config(f)
    assert cfg.collection == "wiki"
    assert cfg.retrieval.top_k == 3
    assert cfg.retrieval.fusion.k == 60


def test_import_cjkrag_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cjkrag, cjkrag.config, cjkrag.types, cjkrag.errors; cjkrag.open();"
        "heavy = [m for m in ('torch', 'pymilvus', 'transformers', 'sentence_transformers', 'qdrant_client',"
        " 'weaviate', 'elasticsearch', 'fastapi', 'ray') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
