"""``store.backend`` selects the adapter through ``connectors.registry`` (built-ins + entry points)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cjkrag.config import load_config
from cjkrag.connectors import registry
from cjkrag.connectors.paired import PairedStore
from cjkrag.errors import ConfigError, StoreError

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_backend_lists_the_known_ones() -> None:
    cfg = load_config({"store": {"backend": "qdrnt"}})
    with pytest.raises(ConfigError) as info:
        registry.create_store(cfg)
    message = str(info.value)
    for name in ("milvus", "qdrant", "weaviate", "elasticsearch", "cjkrag.stores"):
        assert name in message


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("configs/milvus.yaml", "MilvusStore"),
        ("configs/qdrant.yaml", "QdrantStore"),
        ("configs/qdrant-server.yaml", "QdrantStore"),
        ("configs/elasticsearch.yaml", "ElasticsearchStore"),
        ("configs/weaviate.yaml", "WeaviateStore"),
        ("configs/compose-weaviate.yaml", "WeaviateStore"),
        ("configs/milvus+elasticsearch.yaml", "PairedStore"),
    ],
)
def test_shipped_configs_build_their_store_without_connecting(path: str, kind: str) -> None:
    store = registry.create_store(load_config(ROOT / path))  # light: nothing connects before warm_up()
    assert type(store).__name__ == kind


def test_qdrant_paths_resolve_under_the_data_dir(tmp_path: Path) -> None:
    cfg = load_config({"data_dir": str(tmp_path), "store": {"backend": "qdrant"}})
    store: Any = registry.create_store(cfg)
    assert store.path == str(tmp_path / "qdrant") and store.mode == "edge"
    assert "bigrams=True" in store.analyzer  # the analyzer version is recorded with the collection


def test_weaviate_store_records_the_analyzer_and_takes_the_key_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEAVIATE_API_KEY", "wv-secret-key")
    store: Any = registry.create_store(load_config({"collection": "docs", "store": {"backend": "weaviate"}}))
    assert store.name == "Docs" and store.uri == "http://localhost:8080" and store.grpc_port == 50051
    assert "bigrams=True" in store.analyzer
    assert store._api_key == "wv-secret-key" and "wv-secret-key" not in repr(vars(store).get("uri"))


class _EP:
    def __init__(self, name: str, value: str, loaded: Any) -> None:
        self.name, self.value, self._loaded = name, value, loaded

    def load(self) -> Any:
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def test_entry_point_plugins_are_found_and_cannot_shadow_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    def factory(config: Any) -> str:
        made.append(config)
        return "a third-party store"

    eps = [
        _EP("mystore", "pkg.mod:factory", factory),
        _EP("milvus", "evil:factory", RuntimeError("must never load")),
        _EP("broken", "gone:factory", ImportError("no module gone")),
    ]
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: eps if group == registry.GROUP else []
    )
    assert registry.known_backends() == ["milvus", "qdrant", "weaviate", "elasticsearch", "broken", "mystore"]
    cfg = load_config({"store": {"backend": "mystore", "options": {"x": 1}}})
    assert registry.create_store(cfg) == "a third-party store"  # type: ignore[comparison-overlap]
    assert made[0].store.options == {"x": 1}
    assert registry.factory("milvus").__module__ == "cjkrag.connectors.milvus.factory"
    with pytest.raises(ConfigError, match=r"broken.*cannot be loaded"):
        registry.factory("broken")


def test_credentials_come_from_env_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_API_KEY", "s3cret-value")
    cfg = load_config({"store": {"backend": "qdrant", "qdrant": {"mode": "server", "url": "http://q:6333"}}})
    store: Any = registry.create_store(cfg)
    assert store._api_key == "s3cret-value"
    assert "s3cret-value" not in cfg.model_dump_json()  # never part of the configuration
    with pytest.raises(ConfigError, match="unknown key"):
        load_config({"store": {"qdrant": {"api_key": "inline"}}})
    monkeypatch.setenv("QDRANT_API_KEY", " ")
    with pytest.raises(ConfigError, match="QDRANT_API_KEY is set but empty") as info:
        registry.create_store(cfg)
    assert "s3cret" not in str(info.value)


def test_paired_store_writes_both_and_reports_either_failure() -> None:
    class Side:
        def __init__(self, fail: bool = False) -> None:
            self.fail, self.calls = fail, []

        def upsert(self, records: Any) -> None:
            self.calls.append(("upsert", len(records)))
            if self.fail:
                raise StoreError("es down")

        def delete(self, ids: Any = None, filters: Any = None) -> None:
            self.calls.append(("delete", ids))

    vector, keyword = Side(), Side(fail=True)
    paired = PairedStore(vector, keyword)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"keyword store.*es down"):
        paired.upsert([object()])  # type: ignore[list-item]
    assert vector.calls == [("upsert", 1)] and keyword.calls == [("upsert", 1)]
    paired.delete(ids=["a"])
    assert vector.calls[-1] == ("delete", ["a"]) and keyword.calls[-1] == ("delete", ["a"])


def test_import_cjkrag_and_the_registry_load_no_client_library() -> None:
    code = (
        "import sys, cjkrag, cjkrag.connectors.registry as r; from cjkrag.config import load_config;"
        "r.create_store(load_config({'store': {'backend': 'qdrant'}}));"
        "bad = [m for m in ('qdrant_client', 'qdrant_edge', 'pymilvus', 'elasticsearch', 'weaviate', 'torch')"
        " if m in sys.modules]; print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
