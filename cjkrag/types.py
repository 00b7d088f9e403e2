"""Plain data types shared by ingest, connectors and pipeline (no heavy imports here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One source document, as read from a file or given as a record."""

    id: str
    text: str
    title: str = ""
    acl: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    public: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    language: str | None = None  # "zh" | "ja" | "ko" | "en" | None (detect per script run)
    tenant: str = ""
    source: str = ""  # path or "<record>"


@dataclass(frozen=True)
class Chunk:
    """A span of a document's text; ``text == document.text[start:end]``."""

    text: str
    start: int
    end: int
    index: int
    token_count: int


@dataclass
class ChunkRecord:
    """What is stored per chunk in every backend."""

    chunk_id: str
    doc_id: str
    text: str
    start: int
    end: int
    chunk_index: int
    title: str
    acl: list[str]
    deny: list[str]
    public: bool
    metadata: dict[str, Any]
    vector: list[float]
    keywords: list[str]  # analyzer output (pipeline.analyzer), one token per item, never re-split
    doc_hash: str  # hash of the document's text + access + metadata (incremental ingest)
    tenant: str = ""
    language: str = ""

    def as_filterable(self) -> dict[str, Any]:
        """The fields the filter language can address (see connectors.filters.FIELDS)."""
        return {
            "doc_id": self.doc_id,
            "chunk_id": self.chunk_id,
            "title": self.title,
            "acl": list(self.acl),
            "deny": list(self.deny),
            "public": self.public,
            "tenant": self.tenant,
            "language": self.language,
            "start": self.start,
            "end": self.end,
            "chunk_index": self.chunk_index,
            "metadata": dict(self.metadata),
        }


@dataclass
class StoredHit:
    """A hit as a store returns it: the stored fields plus the backend score (higher is better)."""

    chunk_id: str
    score: float
    fields: dict[str, Any]


@dataclass
class Hit:
    """One search result for a caller."""

    doc_id: str
    chunk_id: str
    text: str
    score: float
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    scores: dict[str, float] = field(default_factory=dict)  # per stage: dense, keyword, fused, rerank
    ranks: dict[str, int] = field(default_factory=dict)  # 1-based rank per stage

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "chunk_id": self.chunk_id,
            "text": self.text,
            "score": self.score,
            "start": self.start,
            "end": self.end,
            "title": self.title,
            "metadata": self.metadata,
            "scores": self.scores,
            "ranks": self.ranks,
        }
