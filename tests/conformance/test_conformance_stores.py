"""The conformance suite (``tests/conformance/base.py``) on every engine that runs here, one fixture each.

Milvus Lite 2.5.1 (the C++ engine, one Lite file per test), Qdrant edge (qdrant-edge-py, Qdrant's Rust
engine in-process) and Qdrant local mode (qdrant-client, on disk). A Qdrant server and Elasticsearch run when
given (``QDRANT_URL`` / ``ES_URL``, e.g. the compose.yaml services) and are skipped with that reason
otherwise (not marked ``integration``, so ``make test`` lists them as skipped with the reason rather than
deselecting them); so does Weaviate (``WEAVIATE_URL``, gRPC port from ``WEAVIATE_GRPC_PORT``, default 50051;
everything that needs no server is unit-tested in tests/test_weaviate_store.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from cjkrag.connectors.protocol import VectorStore
from tests.conformance.base import StoreConformance

MakeStore = Callable[[], VectorStore]
QDRANT_TEST_AVGDL = 3.0  # close to the suite's chunk lengths, so length normalization matters


class TestMilvusLite(StoreConformance):
    # Milvus Lite 2.5.1 has no exists() on JSON keys (a Milvus server has)
    refused_filters = (
        "Condition(field='metadata.k', operator='exists', value=True)",
        "Condition(field='metadata.k', operator='exists', value=False)",
    )

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        pytest.importorskip("milvus_lite")
        from cjkrag.connectors.milvus.store import MilvusStore

        path = str(tmp_path / "milvus.db")
        return lambda: MilvusStore(path, "conformance")


class TestQdrantEdge(StoreConformance):
    bm25_avgdl = QDRANT_TEST_AVGDL
    idf_counts_deleted_until_vacuum = True

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        pytest.importorskip("qdrant_edge")
        from cjkrag.connectors.qdrant.store import QdrantStore

        return lambda: QdrantStore("conformance", mode="edge", path=tmp_path, bm25_avgdl=QDRANT_TEST_AVGDL)


class TestQdrantLocal(StoreConformance):
    bm25_avgdl = QDRANT_TEST_AVGDL

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        pytest.importorskip("qdrant_client")
        from cjkrag.connectors.qdrant.store import QdrantStore

        return lambda: QdrantStore("conformance", mode="local", path=tmp_path, bm25_avgdl=QDRANT_TEST_AVGDL)


def _server(var: str) -> str:
    url = os.environ.get(var)
    if not url:
        pytest.skip(
            f"{var} is not set: no server to run against (start it with docker compose and set {var})"
        )
    return url


class TestQdrantServer(StoreConformance):
    bm25_avgdl = QDRANT_TEST_AVGDL

    @pytest.fixture
    def make_store(self) -> MakeStore:
        url = _server("QDRANT_URL")
        from cjkrag.connectors.qdrant.store import QdrantStore

        name = f"conf_{uuid.uuid4().hex[:10]}"
        key = os.environ.get("QDRANT_API_KEY")
        return lambda: QdrantStore(name, mode="server", url=url, api_key=key, bm25_avgdl=QDRANT_TEST_AVGDL)


class TestElasticsearchServer(StoreConformance):
    @pytest.fixture
    def make_store(self) -> MakeStore:
        url = _server("ES_URL")
        from cjkrag.connectors.elasticsearch.store import ElasticsearchStore

        name = f"conf_{uuid.uuid4().hex[:10]}"
        return lambda: ElasticsearchStore(url, name, api_key=os.environ.get("ES_API_KEY"))


class TestWeaviateServer(StoreConformance):
    @pytest.fixture
    def make_store(self) -> MakeStore:
        url = _server("WEAVIATE_URL")
        from cjkrag.connectors.weaviate.store import WeaviateStore

        name = f"Conf_{uuid.uuid4().hex[:10]}"
        port = int(os.environ.get("WEAVIATE_GRPC_PORT", "50051"))
        key = os.environ.get("WEAVIATE_API_KEY")
        return lambda: WeaviateStore(url, name, grpc_port=port, api_key=key)
