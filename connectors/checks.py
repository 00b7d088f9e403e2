"""Argument checks every store adapter makes the same way (one wording for every backend)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from cjkrag.errors import StoreError


def check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise StoreError(f"vector dimension must be a positive int, got {dim!r}")
    return dim


def check_top_k(top_k: Any, limit: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise StoreError(f"top_k must be a positive int, got {top_k!r}")
    if top_k > limit:
        raise StoreError(f"top_k={top_k} is over this backend's limit of {limit}: ask for fewer hits")


def check_terms(terms: Sequence[Any]) -> list[str]:
    """The non-empty analyzer tokens; StoreError for anything that is not a whitespace-free string."""
    bad = [t for t in terms if not isinstance(t, str) or any(c.isspace() for c in t)]
    if bad:
        raise StoreError(
            f"keyword query terms {bad!r} are not whitespace-free strings: pass the analyzer's tokens"
        )
    return [t for t in terms if t]


def check_delete(ids: Sequence[str] | None, filters: object) -> None:
    if ids is None and filters is None:
        raise StoreError("delete() needs ids or filters; to remove everything use drop_collection()")
    if isinstance(ids, str):
        raise StoreError("delete(ids=...) takes a list of chunk ids, not one string")


def check_query(fields: Sequence[str], stored: Collection[str], limit: Any) -> list[str]:
    """The output fields (``chunk_id`` first) of a ``query`` call, after checking fields and limit."""
    unknown = [f for f in fields if f not in stored]
    if unknown:
        raise StoreError(f"query fields {unknown} are not stored; choose from {sorted(stored)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise StoreError(f"query limit must be a positive int, got {limit!r}")
    return ["chunk_id", *[f for f in fields if f != "chunk_id"]]


def check_vector_dim(got: int, want: int, where: str) -> None:
    if got != want:
        raise StoreError(
            f"query vector has {got} dimensions, {where} has {want}: "
            "search with the embedding model the collection was built with"
        )
