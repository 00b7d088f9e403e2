"""``store.backend: milvus``: a :class:`MilvusStore` from the configuration (see ``connectors.registry``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cjkrag.connectors.registry import secret_from_env

if TYPE_CHECKING:
    from cjkrag.config import Config
    from cjkrag.connectors.milvus.store import MilvusStore


def from_config(config: Config) -> MilvusStore:
    from cjkrag.connectors.milvus.store import MilvusStore

    m = config.store.milvus
    token = secret_from_env(m.token_env, "store.milvus.token_env") or m.token
    return MilvusStore(
        config.milvus_uri(), config.collection, token=token, analyzer=config.analyzer_tag(),
        search_consistency=m.search_consistency,
    )
