"""cjkrag as a LangChain retriever (extra ``langchain``: ``pip install 'cjkrag[langchain]'``).

>>> from cjkrag.pipeline.integrations.langchain import CjkragRetriever
>>> retriever = CjkragRetriever(engine=engine, principals=["group:support"], k=5)
>>> docs = retriever.invoke("如何重置密码", filters={"field": "metadata.lang", "operator": "==", "value": "zh"})

Each result is a ``Document`` whose ``id`` is the chunk id, ``page_content`` the chunk text and ``metadata``
the chunk's user metadata overlaid with ``doc_id, chunk_id, title, score, scores, ranks, start, end``.
Results are exactly :meth:`Engine.search`'s, in its order. ``principals`` are fixed when the retriever is built
(the application's authenticated user); a call can change ``k``, ``mode``, ``rerank`` and add ``filters``
(ANDed with the retriever's own), never the principals.

LangChain documents ingest with the Engine itself: ``engine.ingest(loader.load(), acl=["group:support"])``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from cjkrag.config import Config
from cjkrag.connectors.filters import FilterNode, and_, parse_filter, validate_principal
from cjkrag.engine import Engine, open_engine
from cjkrag.errors import AccessError, ConfigError, missing
from cjkrag.pipeline.integrations import hit_metadata, langchain_record
from cjkrag.types import Hit

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing("langchain", "langchain-core") from exc

__all__ = ["MAX_K", "CjkragRetriever", "langchain_record", "to_document"]

#: The most results one call may ask for (the limit of ``retrieval.top_k`` in the config).
MAX_K = 1000
_PER_CALL = ("k", "filters", "mode", "rerank")


def to_document(hit: Hit) -> Document:
    """A LangChain ``Document`` for one cjkrag hit (``id`` = chunk id)."""
    return Document(id=hit.chunk_id, page_content=hit.text, metadata=hit_metadata(hit))


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be an integer from 1 to {MAX_K}, not {k!r}")
    return k


class CjkragRetriever(BaseRetriever):
    """LangChain retriever over a cjkrag :class:`~cjkrag.engine.Engine` (give ``engine`` or ``config``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Engine
    """The cjkrag Engine searched (the application owns it and closes it)."""
    principals: tuple[str, ...] = Field(frozen=True)
    """Who the retriever searches as, fixed at construction: ``user:alice``, ``group:support``... Required."""
    k: int | None = Field(default=None, ge=1, le=MAX_K)
    """Documents per call; None: the config's ``retrieval.top_k``. A call may pass ``k=``."""
    mode: Literal["hybrid", "dense", "keyword"] | None = None
    """None: the config's ``retrieval.mode``."""
    rerank: bool | None = None
    """None: rerank when the config names a reranker."""
    filters: dict[str, Any] | None = None
    """A filter in cjkrag's filter language (connectors/FILTERS.md), validated at construction."""

    @model_validator(mode="before")
    @classmethod
    def _engine_from_config(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "config" in data:
            data = dict(data)
            config = data.pop("config")
            if data.get("engine") is not None:
                raise ConfigError("CjkragRetriever: give engine= or config=, not both")
            if not isinstance(config, (str, Path, Mapping, Config)):
                raise ConfigError(f"CjkragRetriever config= must be a YAML path, a dict or a Config, not {config!r}")
            data["engine"] = open_engine(config)
        return data

    @field_validator("principals", mode="before")
    @classmethod
    def _check_principals(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise AccessError(
                f"principals must be a list of strings such as ['group:support'], not {value!r}"
            )
        try:
            return tuple(validate_principal(p) for p in value)
        except ValueError as exc:
            raise AccessError(f"principals: {exc}") from None

    @field_validator("filters")
    @classmethod
    def _check_filters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        parse_filter(value)  # FilterError names the part at fault
        return value

    # -- searching ---------------------------------------------------------------------------------------
    def _arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.pop("verbose", None)  # BaseRetriever.invoke reads it and passes it on
        if "principals" in kwargs:
            raise AccessError(
                "principals are fixed when the retriever is built (the authenticated user); "
                "build another CjkragRetriever to search as someone else"
            )
        unknown = sorted(set(kwargs) - set(_PER_CALL))
        if unknown:
            raise TypeError(f"CjkragRetriever got unknown argument(s) {unknown}; per call it takes {list(_PER_CALL)}")
        k = kwargs.get("k")
        filters: FilterNode | None = and_(parse_filter(self.filters), parse_filter(kwargs.get("filters")))
        rerank = kwargs.get("rerank")
        return {
            "principals": list(self.principals),
            "top_k": _check_k(k) if k is not None else self.k,
            "mode": kwargs.get("mode") or self.mode,
            "rerank": self.rerank if rerank is None else rerank,
            "filters": filters,
        }

    def _search(self, query: str, arguments: dict[str, Any]) -> list[Document]:
        return [to_document(hit) for hit in self.engine.search(query, **arguments)]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._search(query, self._arguments(kwargs))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # Embedding and the store query block: run them on a worker thread, never on the event loop.
        return await asyncio.to_thread(self._search, query, self._arguments(kwargs))
