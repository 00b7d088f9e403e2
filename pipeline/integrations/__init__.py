"""Retriever plugins for LangChain (``.langchain``, extra ``langchain``) and LlamaIndex (``.llamaindex``,
extra ``llamaindex``), plus what both share. This module imports neither framework.

Both plugins search through :meth:`cjkrag.engine.Engine.search` and nothing else, so a framework user gets
the same hits, scores and access control as an Engine user. The principals are fixed when a retriever is
built (the application's authenticated user); no per-call argument can change them, and the plugins offer
no per-call narrowing either (narrow by building another retriever).

Framework documents are ingested by :meth:`Engine.ingest` itself: it turns a LangChain ``Document`` or a
LlamaIndex ``Document``/``TextNode`` into a cjkrag record with :func:`framework_record`, and the access rule
comes only from the ``acl``/``deny``/``public`` arguments of that call, never from the document's metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cjkrag.types import Hit

__all__ = ["HIT_FIELDS", "framework_record", "hit_metadata", "langchain_record", "llamaindex_record"]

#: The cjkrag fields every plugin result carries in its metadata (they win over user metadata of the same name).
HIT_FIELDS = ("doc_id", "chunk_id", "title", "score", "scores", "ranks", "start", "end")


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """The user metadata of ``hit`` overlaid with its cjkrag fields (``HIT_FIELDS``)."""
    return {
        **hit.metadata,
        "doc_id": hit.doc_id,
        "chunk_id": hit.chunk_id,
        "title": hit.title,
        "score": hit.score,
        "scores": dict(hit.scores),
        "ranks": dict(hit.ranks),
        "start": hit.start,
        "end": hit.end,
    }


def _json_safe(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as JSON the stores keep: dates and other objects become their ``str`` (nothing is dropped)."""
    data = json.loads(json.dumps(dict(metadata), default=str, ensure_ascii=False))
    assert isinstance(data, dict)
    return data


def _record(doc_id: str, text: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    meta = _json_safe(metadata)
    title = meta.get("title")
    return {"id": doc_id, "text": text, "title": title if isinstance(title, str) else "", "metadata": meta}


def langchain_record(doc: Any, *, id_key: str | None = None) -> dict[str, Any]:
    """A cjkrag record (no access fields: the ingest call gives them) for a LangChain ``Document``.

    The document id is ``doc.id``, else ``metadata[id_key]`` when ``id_key`` is given, else a hash of
    ``metadata["source"]`` and the text: stable, so re-ingesting an unchanged document changes nothing. Give
    documents an id (``Document(id=...)`` or ``id_key``) if an edited version must replace the old one.
    """
    metadata: Mapping[str, Any] = doc.metadata or {}
    doc_id = doc.id
    if not doc_id and id_key is not None:
        doc_id = metadata.get(id_key)
    if not doc_id:
        source = str(metadata.get("source", ""))
        digest = hashlib.sha256(f"{source}\0{doc.page_content}".encode()).hexdigest()[:24]
        doc_id = f"lc-{digest}"
    return _record(str(doc_id), doc.page_content, metadata)


def llamaindex_record(node: Any) -> dict[str, Any]:
    """A cjkrag record for a LlamaIndex ``Document`` or ``TextNode``: id = ``node.node_id``, text without metadata.

    LlamaIndex gives new documents a random id; readers take ``filename_as_id=True`` for a stable one, so
    that re-ingesting a file replaces it instead of adding a copy.
    """
    from llama_index.core.schema import MetadataMode

    return _record(str(node.node_id), node.get_content(metadata_mode=MetadataMode.NONE), node.metadata or {})


def _derives_from(obj: Any, module: str, name: str) -> bool:
    return any(c.__module__ == module and c.__name__ == name for c in type(obj).__mro__)


def framework_record(obj: Any) -> dict[str, Any] | None:
    """A record for a LangChain ``Document`` or a LlamaIndex node/document (or a subclass), else None.

    Classes are recognised by name, so this never imports a framework."""
    if _derives_from(obj, "langchain_core.documents.base", "Document"):
        return langchain_record(obj)
    if _derives_from(obj, "llama_index.core.schema", "BaseNode"):
        return llamaindex_record(obj)
    return None
