"""One real Engine for the plugin tests: Milvus Lite + the bundled multilingual-e5-small, loaded once per session.

The corpus is small and mixed (zh/ja/ko, user metadata, public, ACL with deny) so that every test sees
ranked, filtered and access-controlled results from the real pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integrations.corpus import BUNDLED, CORPUS


@pytest.fixture(scope="session")
def bundled_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real Engine (bundled model, Milvus Lite in tmp) over ``CORPUS``; the model loads once here."""
    import cjkrag

    engine = cjkrag.open({"data_dir": str(tmp_path_factory.mktemp("plugins")), "collection": "plugins"})
    report = engine.ingest(CORPUS)
    assert report.failures == [] and report.documents == len(CORPUS), report.summary()
    yield engine
    engine.close()


@pytest.fixture
def share_bundled_model(bundled_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines opened inside a test reuse the session's loaded bundled model instead of loading it again
    (the model is the real one; only the load is shared)."""
    from cjkrag.ingest.embedding import loader

    real = loader.load_embedder

    def load(model: str, *args: Any, **kwargs: Any) -> Any:
        return bundled_engine.embedder if model == BUNDLED else real(model, *args, **kwargs)

    monkeypatch.setattr(loader, "load_embedder", load)
