"""``store.backend: weaviate``: not available yet (the schema and its verification are in ``schema.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from cjkrag.errors import ConfigError

if TYPE_CHECKING:
    from cjkrag.config import Config


def from_config(config: Config) -> NoReturn:
    raise ConfigError(
        "store.backend 'weaviate': this version has the Weaviate collection schema, its verification and the "
        "filter translator, but not the store adapter yet; use milvus, qdrant or elasticsearch"
    )
