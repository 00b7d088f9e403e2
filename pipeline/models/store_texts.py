"""Document texts from the configured collection, for click-log resolution and hard-negative mining.

This reads every chunk regardless of its ACL: it is an operator's tool on their own store (like ingest),
never reachable from the search service. A model trained on restricted documents can leak their content
through its behaviour; train on collections whose readers may all use the resulting model.
"""

from __future__ import annotations

from typing import Any

MAX_CHUNKS = 200_000


def collection_texts(engine: Any, limit: int = MAX_CHUNKS) -> dict[str, str]:
    """doc id -> its chunks' text in chunk order (joined), for up to ``limit`` chunks."""
    rows = engine.store.query(None, ["doc_id", "text", "chunk_index"], limit=limit)
    parts: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        parts.setdefault(str(row["doc_id"]), []).append((int(row.get("chunk_index") or 0), str(row["text"])))
    return {doc: "".join(t for _, t in sorted(chunks)) for doc, chunks in parts.items()}
