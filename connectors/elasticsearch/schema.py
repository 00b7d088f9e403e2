"""Elasticsearch index body, mapping verification and request bodies (pure: no client, unit-tested).

Mapping (``index_body``): ``dynamic: strict`` at the top (a typo'd field is an error, never a new ``text``
field), ``keyword`` for every exact-match field (``acl``, ``deny``, ``doc_id``, ``chunk_id``, ``tenant``,
``language``, ``doc_hash``, ``title``), ``long`` for offsets, ``boolean`` for ``public``, ``metadata`` as an
object whose strings are ``keyword`` (``dynamic_templates``), ``keywords`` as ``text`` with the ``whitespace``
analyzer (the cjkrag analyzer's tokens, one per space, never re-split or lowercased; BM25 k1=1.2, b=0.75),
``vector`` as ``dense_vector`` (HNSW, cosine; ``int8_hnsw`` optional), ``text`` stored but not indexed.

Why verification matters (issue 8, item 4): the ACL clause is ``terms``/``must_not terms`` on ``acl``/
``deny``. On a dynamically mapped ``text`` field ``user:alice`` is indexed as the tokens ``user``/``alice``,
so ``must_not terms deny: ["user:alice"]`` never matches and the deny fails open. :func:`mapping_problems`
lists every field whose mapping is not what the filters need; the store refuses such an index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cjkrag.types import ChunkRecord

SCHEMA_VERSION = 1
EXACT_FIELDS = ("chunk_id", "doc_id", "title", "acl", "deny", "tenant", "language", "doc_hash")
#: fields the access clause and document bookkeeping depend on: a wrong mapping here is a security problem
ACCESS_FIELDS = ("acl", "deny", "doc_id", "tenant", "chunk_id")
SOURCE_FIELDS = (*EXACT_FIELDS, "text", "start", "end", "chunk_index", "public", "metadata")


def index_body(dim: int, meta: Mapping[str, Any], *, int8_hnsw: bool = False) -> dict[str, Any]:
    """``settings`` + ``mappings`` for ``indices.create``."""
    properties: dict[str, Any] = {name: {"type": "keyword"} for name in EXACT_FIELDS}
    properties.update(
        {
            "text": {"type": "text", "index": False},
            "start": {"type": "long"},
            "end": {"type": "long"},
            "chunk_index": {"type": "long"},
            "public": {"type": "boolean"},
            "metadata": {"type": "object", "dynamic": True},
            "keywords": {"type": "text", "analyzer": "whitespace", "similarity": "BM25"},
            "vector": {
                "type": "dense_vector",
                "dims": dim,
                "index": True,
                "similarity": "cosine",
                "index_options": {
                    "type": "int8_hnsw" if int8_hnsw else "hnsw",
                    "m": 16,
                    "ef_construction": 100,
                },
            },
        }
    )
    return {
        "settings": {"index": {"number_of_shards": 1, "similarity": {"default": {"type": "BM25"}}}},
        "mappings": {
            "dynamic": "strict",
            "_meta": {"cjkrag": dict(meta)},
            "dynamic_templates": [
                {
                    "metadata_strings": {
                        "path_match": "metadata.*",
                        "match_mapping_type": "string",
                        "mapping": {"type": "keyword"},
                    }
                },
            ],
            "properties": properties,
        },
    }


def mapping_problems(mappings: Mapping[str, Any], meta: Mapping[str, Any] | None) -> list[str]:
    """What makes an existing index unusable or unsafe ([] if fine); ``meta``: the settings expected."""
    props = mappings.get("properties") or {}
    problems: list[str] = []
    for name in EXACT_FIELDS:
        kind = (props.get(name) or {}).get("type")
        if kind != "keyword":
            why = (
                " (deny/ACL terms would not match exactly: access fails open)"
                if name in ACCESS_FIELDS
                else ""
            )
            problems.append(f"field {name!r} is mapped as {kind or 'nothing'}, expected keyword{why}")
    if (props.get("public") or {}).get("type") != "boolean":
        problems.append(
            f"field 'public' is mapped as {(props.get('public') or {}).get('type')}, expected boolean"
        )
    keywords = props.get("keywords") or {}
    if keywords.get("type") != "text" or keywords.get("analyzer") != "whitespace":
        problems.append(
            f"field 'keywords' is {keywords.get('type')} with analyzer {keywords.get('analyzer')!r}, expected text "
            "with the whitespace analyzer (cjkrag's tokens must not be re-split)"
        )
    vector = props.get("vector") or {}
    if vector.get("type") != "dense_vector" or vector.get("similarity") != "cosine":
        problems.append(
            f"field 'vector' is {vector.get('type')} with similarity {vector.get('similarity')!r}, "
            "expected dense_vector with cosine"
        )
    dynamic_metadata = any(
        (t.get("metadata_strings") or {}).get("mapping", {}).get("type") == "keyword"
        for t in mappings.get("dynamic_templates") or []
        if isinstance(t, Mapping)
    )
    if not dynamic_metadata:
        problems.append(
            "metadata strings are not mapped as keyword (dynamic template 'metadata_strings' missing)"
        )
    if meta is not None:
        stored = ((mappings.get("_meta") or {}).get("cjkrag")) or {}
        labels = {"schema": "schema version", "dim": "vector dimension", "analyzer": "analyzer version"}
        for key, want in meta.items():
            if stored.get(key) != want:
                problems.append(
                    f"{labels.get(key, key)} is {stored.get(key)!r} in the index but {want!r} here"
                )
    return problems


def document(r: ChunkRecord) -> dict[str, Any]:
    """A chunk's ``_source``."""
    return {
        "chunk_id": r.chunk_id, "doc_id": r.doc_id, "text": r.text, "title": r.title, "start": r.start,
        "end": r.end, "chunk_index": r.chunk_index, "acl": list(r.acl), "deny": list(r.deny),
        "public": bool(r.public), "tenant": r.tenant, "language": r.language, "doc_hash": r.doc_hash,
        "metadata": dict(r.metadata), "keywords": " ".join(r.keywords), "vector": [float(x) for x in r.vector],
    }  # fmt: skip


def index_actions(index: str, records: Sequence[ChunkRecord]) -> list[dict[str, Any]]:
    """``helpers.streaming_bulk`` actions: ``index`` by ``_id = chunk_id`` (idempotent: a replace)."""
    return [
        {"_op_type": "index", "_index": index, "_id": r.chunk_id, "_source": document(r)} for r in records
    ]


def delete_actions(index: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    return [{"_op_type": "delete", "_index": index, "_id": str(i)} for i in ids]


def knn_body(vector: Sequence[float], top_k: int, flt: dict[str, Any] | None) -> dict[str, Any]:
    """Filtered kNN (the filter is applied during the HNSW search: top_k *visible* hits)."""
    knn: dict[str, Any] = {
        "field": "vector",
        "query_vector": [float(x) for x in vector],
        "k": top_k,
        "num_candidates": min(max(100, 2 * top_k), 10000),
    }
    if flt is not None:
        knn["filter"] = flt
    return {"knn": knn, "size": top_k, "_source": list(SOURCE_FIELDS)}


def bm25_body(terms: Sequence[str], top_k: int, flt: dict[str, Any] | None) -> dict[str, Any]:
    """BM25 over ``keywords``: one ``term`` clause per token (exact tokens, repeated ones count again)."""
    should = [{"term": {"keywords": t}} for t in terms]
    query: dict[str, Any] = {"bool": {"should": should, "minimum_should_match": 1}}
    if flt is not None:
        query["bool"]["filter"] = [flt]
    return {"query": query, "size": top_k, "_source": list(SOURCE_FIELDS)}


def filter_query(flt: dict[str, Any] | None) -> dict[str, Any]:
    return {"bool": {"filter": [flt]}} if flt is not None else {"match_all": {}}


def cosine_from_score(score: float) -> float:
    """Elasticsearch's cosine kNN score is ``(1 + cos) / 2``; the protocol wants the cosine."""
    return 2.0 * float(score) - 1.0
