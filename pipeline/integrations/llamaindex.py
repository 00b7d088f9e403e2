"""cjkrag as a LlamaIndex retriever (extra ``llamaindex``: ``pip install 'cjkrag[llamaindex]'``).

>>> from cjkrag.pipeline.integrations.llamaindex import CjkragRetriever
>>> retriever = CjkragRetriever(engine, principals=["group:support"], similarity_top_k=5)
>>> nodes = retriever.retrieve("如何重置密码")      # list[NodeWithScore], best first

Each result is a ``NodeWithScore`` of a ``TextNode`` whose ``node_id`` is the chunk id, ``ref_doc_id`` the
document id, ``start_char_idx``/``end_char_idx`` the chunk's offsets and ``metadata`` the chunk's user
metadata overlaid with ``doc_id, chunk_id, title, score, scores, ranks, start, end`` (only ``title`` and
``doc_id`` are shown to the LLM). Results are exactly :meth:`Engine.search`'s, in its order; the principals
are fixed at construction. LlamaIndex ``MetadataFilters`` are translated where cjkrag's filter language has
the exact operator (``EQ NE GT GTE LT LTE IN NIN``, ``AND``/``OR``); anything else is a FilterError.

LlamaIndex documents and nodes ingest with the Engine itself: ``engine.ingest(documents, acl=[...])``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cjkrag.config import Config
from cjkrag.connectors.filters import FIELDS, FilterNode, parse_filter, validate_principal
from cjkrag.engine import Engine, open_engine
from cjkrag.errors import AccessError, ConfigError, FilterError, missing
from cjkrag.pipeline.integrations import HIT_FIELDS, hit_metadata, llamaindex_record
from cjkrag.pipeline.search import MODES
from cjkrag.types import Hit

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import (
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
    )
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing("llamaindex", "llama-index-core") from exc

__all__ = ["MAX_TOP_K", "CjkragRetriever", "llamaindex_record", "to_node", "translate_filters"]

MAX_TOP_K = 1000
#: LlamaIndex operators with an exact cjkrag equivalent.
OPERATORS: dict[FilterOperator, str] = {
    FilterOperator.EQ: "==",
    FilterOperator.NE: "!=",
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
    FilterOperator.IN: "in",
    FilterOperator.NIN: "not in",
}
_CONDITIONS = {FilterCondition.AND: "AND", FilterCondition.OR: "OR"}
_HIDDEN_FROM_LLM = [f for f in HIT_FIELDS if f not in ("title", "doc_id")]


def _field(key: str) -> str:
    """A LlamaIndex metadata key -> a cjkrag field: a top-level field by name, else ``metadata.<key>``."""
    return key if key in FIELDS or key.startswith("metadata.") else f"metadata.{key}"


def _translate(spec: MetadataFilters | MetadataFilter, path: str) -> dict[str, Any]:
    if isinstance(spec, MetadataFilter):
        op = OPERATORS.get(spec.operator)
        if op is None:
            exact = ", ".join(o.name for o in OPERATORS)
            raise FilterError(
                f"MetadataFilters {path} (key {spec.key!r}): operator {spec.operator.name} has no exact "
                f"equivalent in cjkrag's filter language; use {exact}, or pass a cjkrag filter dict "
                "(connectors/FILTERS.md) as filters="
            )
        return {"field": _field(spec.key), "operator": op, "value": spec.value}
    condition = _CONDITIONS.get(spec.condition or FilterCondition.AND)
    if condition is None:
        raise FilterError(
            f"MetadataFilters {path}: condition {spec.condition!r} is not translated (its meaning differs "
            "between LlamaIndex stores); use AND/OR, or NE/NIN, or a cjkrag filter dict with NOT"
        )
    if not spec.filters:
        raise FilterError(f"MetadataFilters {path}: an empty nested group has no exact meaning; remove it")
    return {
        "operator": condition,
        "conditions": [_translate(f, f"{path}.filters[{i}]") for i, f in enumerate(spec.filters)],
    }


def translate_filters(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` -> a validated cjkrag filter dict (None for no filter)."""
    if filters is None or not filters.filters:
        return None
    spec = _translate(filters, "filters")
    try:
        parse_filter(spec)
    except FilterError as exc:
        raise FilterError(f"MetadataFilters translated to {spec}: {exc}") from None
    return spec


def to_node(hit: Hit) -> NodeWithScore:
    """A ``NodeWithScore`` for one cjkrag hit (``node_id`` = chunk id, ``ref_doc_id`` = document id)."""
    node = TextNode(
        id_=hit.chunk_id,
        text=hit.text,
        metadata=hit_metadata(hit),
        start_char_idx=hit.start,
        end_char_idx=hit.end,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.doc_id)},
        excluded_llm_metadata_keys=list(_HIDDEN_FROM_LLM),
        excluded_embed_metadata_keys=list(HIT_FIELDS),
    )
    return NodeWithScore(node=node, score=hit.score)


class CjkragRetriever(BaseRetriever):
    """LlamaIndex retriever over a cjkrag :class:`~cjkrag.engine.Engine` (give ``engine`` or ``config``).

    ``principals`` (required, fixed): who the retriever searches as. ``similarity_top_k``: results per query
    (None: the config's ``retrieval.top_k``). ``mode``/``rerank``: None for the config's. ``filters``:
    LlamaIndex ``MetadataFilters`` or a cjkrag filter dict, validated here.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        principals: Sequence[str],
        config: str | Path | Mapping[str, Any] | Config | None = None,
        similarity_top_k: int | None = None,
        mode: str | None = None,
        rerank: bool | None = None,
        filters: MetadataFilters | Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if (engine is None) == (config is None):
            raise ConfigError("CjkragRetriever: give an engine or config=, exactly one")
        if isinstance(principals, str) or not isinstance(principals, (list, tuple)):
            raise AccessError(f"principals must be a list of strings such as ['group:support'], not {principals!r}")
        try:
            self._principals = tuple(validate_principal(p) for p in principals)
        except ValueError as exc:
            raise AccessError(f"principals: {exc}") from None
        if similarity_top_k is not None and (
            isinstance(similarity_top_k, bool)
            or not isinstance(similarity_top_k, int)
            or not 1 <= similarity_top_k <= MAX_TOP_K
        ):
            raise ConfigError(f"similarity_top_k must be an integer from 1 to {MAX_TOP_K}, not {similarity_top_k!r}")
        if mode is not None and mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if isinstance(filters, MetadataFilters):
            self._filter: FilterNode | None = parse_filter(translate_filters(filters))
        elif filters is None or isinstance(filters, Mapping):
            self._filter = parse_filter(filters)
        else:
            raise FilterError(f"filters must be LlamaIndex MetadataFilters or a cjkrag filter dict, not {filters!r}")
        self.engine = engine if engine is not None else open_engine(config)
        self.similarity_top_k = similarity_top_k
        self.mode = mode
        self.rerank = rerank
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def principals(self) -> tuple[str, ...]:
        """Who this retriever searches as (read-only)."""
        return self._principals

    def _search(self, query: str) -> list[NodeWithScore]:
        hits = self.engine.search(
            query,
            principals=list(self._principals),
            top_k=self.similarity_top_k,
            mode=self.mode,
            rerank=self.rerank,
            filters=self._filter,
        )
        return [to_node(hit) for hit in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # Embedding and the store query block: run them on a worker thread, never on the event loop.
        return await asyncio.to_thread(self._search, query_bundle.query_str)
