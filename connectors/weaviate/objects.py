"""Chunk <-> Weaviate object, and the collection's recorded settings (pure: no client needed, unit-tested).

- Object id: ``uuid5(NAMESPACE, chunk_id)`` (Weaviate ids are UUIDs): writing a chunk twice replaces it.
- Vector: one named vector, :data:`VECTOR`, given by cjkrag (the collection has no vectorizer module).
- ``keywords``: the cjkrag analyzer's tokens joined by single spaces (the property is ``whitespace``
  tokenized, so Weaviate's BM25 sees exactly those tokens: never re-split, lowercased or stop-worded).
- ``acl``/``deny``: ``text[]`` (``field`` tokenization); an empty list is left out of the object (no value),
  which is what ``exists`` (``is_none``) and the reference evaluator agree on.
- ``metadata``: kept whole as JSON in ``metadata_json`` (returned as is), and each filterable key also as
  its own typed property (:func:`flatten_metadata`, names from ``filters.property_name``), because
  Weaviate cannot filter inside a JSON value or an object property.
- Settings: ``{schema, dim, distance, analyzer}`` are recorded in the collection's description
  (:func:`describe`), compared on reopen.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cjkrag.connectors.filters import MAX_PATH_DEPTH, Condition, FilterNode, and_
from cjkrag.connectors.weaviate.filters import _SEGMENT, METADATA_PREFIX
from cjkrag.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from cjkrag.types import ChunkRecord

VECTOR = "default"
NAMESPACE = uuid.UUID("0c7b8d1e-5a43-4c55-9f0e-6b3f1e2d9a70")
DESCRIPTION_PREFIX = "cjkrag collection "
#: chunk fields as stored (``metadata`` is rebuilt from ``metadata_json``)
RETURN_FIELDS = (
    "chunk_id", "doc_id", "text", "title", "start", "end", "chunk_index", "acl", "deny", "public",
    "tenant", "language", "doc_hash", "metadata_json",
)  # fmt: skip
QUERY_FIELDS = (*[f for f in RETURN_FIELDS if f != "metadata_json"], "metadata", "vector")


def object_uuid(chunk_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, chunk_id))


def _scalar_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number" if math.isfinite(float(value)) else None
    if isinstance(value, str):
        return "text" if "\x00" not in value else None
    return None


def _wire(value: Any, data_type: str) -> Any:
    return float(value) if data_type == "number" else value


def flatten_metadata(metadata: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Filterable metadata as ``{property: (data_type, value)}``; what cannot be a typed property is left out.

    ``{"a": {"b": 2}, "tags": ["x"]}`` -> ``{"meta_a__b": ("number", 2.0), "meta_tags": ("text[]", ["x"])}``.
    Left out (kept in ``metadata_json``, filters see the key as missing): keys that are not names Weaviate
    can hold (``filters.property_name``: letters/digits, single ``_`` inside), nesting deeper than the
    filter language reaches, ``None``, empty lists, lists mixing types or holding objects.
    """
    out: dict[str, tuple[str, Any]] = {}

    def walk(prefix: tuple[str, ...], value: Any) -> None:
        if isinstance(value, Mapping):
            if len(prefix) >= MAX_PATH_DEPTH:
                return
            for key, child in value.items():
                if isinstance(key, str) and _SEGMENT.fullmatch(key):
                    walk((*prefix, key), child)
            return
        name = METADATA_PREFIX + "__".join(prefix)
        if isinstance(value, (list, tuple)):
            kinds = {_scalar_type(v) for v in value}
            if len(kinds) != 1 or None in kinds:
                return
            kind = kinds.pop()
            assert kind is not None
            out[name] = (kind + "[]", [_wire(v, kind) for v in value])
            return
        kind = _scalar_type(value)
        if kind is not None:
            out[name] = (kind, _wire(value, kind))

    for key, value in metadata.items():
        if isinstance(key, str) and _SEGMENT.fullmatch(key):
            walk((key,), value)
    return out


def object_properties(r: ChunkRecord) -> dict[str, Any]:
    """The properties of a chunk's object (without the vector and id)."""
    props: dict[str, Any] = {
        "chunk_id": r.chunk_id, "doc_id": r.doc_id, "text": r.text, "title": r.title, "start": int(r.start),
        "end": int(r.end), "chunk_index": int(r.chunk_index), "acl": list(r.acl) or None,
        "deny": list(r.deny) or None, "public": bool(r.public), "tenant": r.tenant, "language": r.language,
        "doc_hash": r.doc_hash, "keywords": " ".join(r.keywords),
        "metadata_json": json.dumps(dict(r.metadata), ensure_ascii=False, sort_keys=True),
    }  # fmt: skip
    for name, (_, value) in flatten_metadata(r.metadata).items():
        props[name] = value
    return {k: v for k, v in props.items() if v is not None}  # absent, not null: what the null index sees


def hit_fields(props: Mapping[str, Any]) -> dict[str, Any]:
    """A returned object's properties as the chunk fields every store returns."""
    fields: dict[str, Any] = {}
    for name in RETURN_FIELDS:
        if name == "metadata_json":
            raw = props.get(name)
            fields["metadata"] = json.loads(raw) if isinstance(raw, str) and raw else {}
        elif name in ("acl", "deny"):
            fields[name] = list(props.get(name) or [])
        elif name in ("start", "end", "chunk_index"):
            value = props.get(name)
            fields[name] = int(value) if value is not None else None
        elif name == "public":
            fields[name] = bool(props.get(name))
        else:
            value = props.get(name)
            fields[name] = "" if value is None and name in ("title", "tenant", "language") else value
    return fields


def describe(meta: Mapping[str, Any]) -> str:
    """The collection description recording cjkrag's settings (read back by :func:`read_description`)."""
    return DESCRIPTION_PREFIX + json.dumps(dict(meta), sort_keys=True)


def read_description(description: str | None, name: str) -> dict[str, Any]:
    """The settings recorded by :func:`describe`; StoreError if the collection was not made by cjkrag."""
    if not description or not description.startswith(DESCRIPTION_PREFIX):
        raise StoreError(
            f"Weaviate collection {name!r} was not created by cjkrag (its description records no cjkrag "
            "settings): set another `collection` name so cjkrag creates its own"
        )
    try:
        meta = json.loads(description[len(DESCRIPTION_PREFIX) :])
    except ValueError as exc:
        raise StoreError(
            f"Weaviate collection {name!r}: the recorded cjkrag settings are not valid JSON ({exc}): set "
            "another `collection` name"
        ) from exc
    if not isinstance(meta, dict):
        raise StoreError(f"Weaviate collection {name!r}: the recorded cjkrag settings are not an object")
    return meta


def collection_name(collection: str) -> str:
    """Weaviate's class name for a cjkrag collection: the first letter upper-cased."""
    if not collection or not collection[0].isalpha():
        raise ConfigError(
            f"collection {collection!r} cannot be a Weaviate collection: the name must start with a letter"
        )
    return collection[0].upper() + collection[1:]


def page_filter(filters: FilterNode | None, last: str | None) -> FilterNode | None:
    """The filter of the page after ``last`` (keyset on ``chunk_id``): ``filters AND chunk_id > last``."""
    return and_(filters, Condition("chunk_id", ">", last) if last is not None else None)


def check_keyset_page(ids: Sequence[str], last: str | None) -> None:
    """A page must come back in strictly increasing ``chunk_id`` order after ``last``, or the keyset cursor
    could skip rows: refuse instead of returning an incomplete answer."""
    previous = last
    for cid in ids:
        if previous is not None and not cid > previous:
            raise StoreError(
                f"Weaviate returned chunk ids out of order ({previous!r} then {cid!r}) while paging by chunk_id: "
                "the server's sort order differs from its range filter; ask for fewer rows (limit <= 10000)"
            )
        previous = cid


MIN_SERVER = (1, 33)  # Filter.not_ (the deny clause, !=, not in) needs the Not operator of Weaviate 1.33


def server_problem(version: str | None) -> str | None:
    """Why a Weaviate server of ``version`` cannot serve cjkrag (None if it can, or if unknown)."""
    if not version:
        return None
    try:
        parts = tuple(int(p) for p in version.split("-")[0].split(".")[:2])
    except ValueError:
        return None
    if parts >= MIN_SERVER:
        return None
    return (
        f"Weaviate {version} has no Not filter operator, which the access clause's deny needs: use Weaviate "
        f">= {MIN_SERVER[0]}.{MIN_SERVER[1]}"
    )
