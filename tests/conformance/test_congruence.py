"""Congruence (in the style of qdrant-client's tests): the same random chunks and random filters on every
engine that runs here and on the reference evaluator (``connectors.filters.evaluate``) select the same ids,
and exact dense search returns the same top ids as a numpy reference on every engine. A Weaviate server joins
when WEAVIATE_URL is set."""

from __future__ import annotations

import importlib.util
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cjkrag.connectors.filters import Condition, FilterNode, Logical, evaluate
from cjkrag.connectors.protocol import VectorStore
from cjkrag.errors import FilterError
from tests.conformance.base import DIM, make_record

PRINCIPALS = ["group:a", "group:b", "group:c", "user:u", "user:v", "user:w"]
TENANTS = ["", "acme", "globex"]
CATS = ["地理", "歴史", "경제", "x"]


def _records(rng: random.Random) -> list[Any]:
    out = []
    for i in range(80):
        meta: dict[str, Any] = {}
        if rng.random() < 0.8:
            meta["cat"] = rng.choice(CATS)
        if rng.random() < 0.7:
            meta["n"] = rng.choice([0, 1, 2.5, 7, 10, -3])
        public = rng.random() < 0.2
        out.append(
            make_record(
                f"c{i:03d}",
                vector=[rng.gauss(0, 1) for _ in range(DIM)],
                tenant=rng.choice(TENANTS),
                acl=rng.sample(PRINCIPALS, rng.randint(0 if public else 1, 3)),
                deny=rng.sample(PRINCIPALS, 1) if rng.random() < 0.25 else [],
                public=public,
                metadata=meta,
                chunk_index=rng.randint(0, 5),
            )
        )
    return out


def _condition(rng: random.Random) -> FilterNode:
    kind = rng.randrange(8)
    if kind == 0:
        return Condition("tenant", rng.choice(["==", "!="]), rng.choice(TENANTS))
    if kind == 1:
        return Condition("tenant", rng.choice(["in", "not in"]), rng.sample(TENANTS, 2))
    if kind == 2:
        return Condition(
            "metadata.cat", rng.choice(["==", "!=", "in"]), rng.choice([rng.choice(CATS), CATS[:2]])
        )
    if kind == 3:
        return Condition("metadata.n", rng.choice([">", ">=", "<", "<=", "=="]), rng.choice([0, 1, 2.5, 7]))
    if kind == 4:
        return Condition("acl", "contains_any", rng.sample(PRINCIPALS, rng.randint(1, 3)))
    if kind == 5:
        return Condition("deny", "contains_any", rng.sample(PRINCIPALS, rng.randint(1, 2)))
    if kind == 6:
        return Condition("public", "==", rng.random() < 0.5)
    return Condition("chunk_index", "in", rng.sample(range(6), 2))


def _filter(rng: random.Random, depth: int = 0) -> FilterNode:
    if depth >= 2 or rng.random() < 0.4:
        node = _condition(rng)
        if isinstance(node, Condition) and node.operator == "in" and isinstance(node.value, str):
            node = Condition(node.field, "==", node.value)
        return node
    op = rng.choice(["AND", "OR", "NOT"])
    if op == "NOT":
        return Logical("NOT", (_filter(rng, depth + 1),))
    return Logical(op, tuple(_filter(rng, depth + 1) for _ in range(rng.randint(2, 3))))


def _stores(tmp: Path) -> dict[str, VectorStore]:
    stores: dict[str, VectorStore] = {}
    if importlib.util.find_spec("milvus_lite") is not None:
        from cjkrag.connectors.milvus.store import MilvusStore

        stores["milvus-lite"] = MilvusStore(str(tmp / "m.db"), "congruence")
    from cjkrag.connectors.qdrant.store import QdrantStore

    stores["qdrant-edge"] = QdrantStore("congruence", mode="edge", path=tmp)
    stores["qdrant-local"] = QdrantStore("congruence", mode="local", path=tmp)
    if os.environ.get("WEAVIATE_URL"):  # a Weaviate server when given (e.g. the compose.yaml service)
        from cjkrag.connectors.weaviate.store import WeaviateStore

        stores["weaviate-server"] = WeaviateStore(
            os.environ["WEAVIATE_URL"],
            f"Congruence_{uuid.uuid4().hex[:10]}",
            grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
            api_key=os.environ.get("WEAVIATE_API_KEY"),
        )
    return stores


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, VectorStore], list[Any]]]:
    records = _records(random.Random(2024))
    stores = _stores(tmp_path_factory.mktemp("congruence"))
    for s in stores.values():
        s.ensure_collection(DIM)
        s.upsert(records)
    yield stores, records
    for name, s in stores.items():
        if name.endswith("-server"):
            s.drop_collection()  # a server outlives the test: leave nothing behind
        s.close()


def test_random_filters_select_what_the_reference_selects(
    world: tuple[dict[str, VectorStore], list[Any]],
) -> None:
    stores, records = world
    rng = random.Random(7)
    checked = 0
    for _ in range(120):
        node = _filter(rng)
        expected = {r.chunk_id for r in records if evaluate(node, r.as_filterable())}
        for name, store in stores.items():
            try:
                got = {str(row["chunk_id"]) for row in store.query(node, ["chunk_id"])}
            except FilterError:
                continue  # a documented refusal (e.g. Milvus Lite cannot express some NOTs): never a wrong answer
            assert got == expected, (name, node)
            checked += 1
    assert checked >= 300


def test_exact_dense_top_ids_agree(world: tuple[dict[str, VectorStore], list[Any]]) -> None:
    stores, records = world
    rng = np.random.default_rng(5)
    vectors = np.array([r.vector for r in records])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for _ in range(15):
        q = rng.normal(size=DIM)
        order = np.argsort(-(vectors @ (q / np.linalg.norm(q))))
        expected = [records[i].chunk_id for i in order[:10]]
        for name, store in stores.items():
            assert [h.chunk_id for h in store.search_dense(list(q), 10, None)] == expected, name
