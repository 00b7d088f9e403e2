"""Shared fixtures: engines over a real Milvus Lite file in tmp, with the fake or the bundled embedder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def make_engine(tmp: Path, **overlay: Any) -> Any:
    import cjkrag

    cfg: dict[str, Any] = {"data_dir": str(tmp), "embedding": {"model": "fake:64"}}
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cjkrag.open(cfg)


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[Any]:
    """Real Milvus Lite + real analyzer + FakeEmbedder (deterministic hashed n-grams)."""
    engine = make_engine(tmp_path)
    yield engine
    engine.close()
