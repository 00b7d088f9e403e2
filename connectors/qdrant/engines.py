"""The two Qdrant engines behind :class:`~cjkrag.connectors.qdrant.store.QdrantStore`.

- :class:`ClientEngine`: ``qdrant-client`` against a server (REST or gRPC) or in its local mode (``path=``
  or ``":memory:"``: pure Python, brute force, for tests and small sets).
- :class:`EdgeEngine`: ``qdrant-edge-py``, Qdrant's Rust engine in-process (one shard folder per
  collection, WAL-backed, payload indexes used): the fast embedded mode.

Both take filters as ``qdrant_client.models.Filter`` (from ``connectors/qdrant/filters.py``); the edge engine
converts them to its own classes. A point is ``(id, dense, (indices, values), payload)``.

qdrant-edge-py 0.9.0 turns ``MatchValue(True)`` into the integer 1, which never matches a stored boolean
(so ``public == true`` matched nothing, and ``public != true`` everything). The edge engine therefore stores
booleans as reserved strings (:data:`BOOL_TRUE`/:data:`BOOL_FALSE`), matches them as such and decodes them
on the way out; strings starting with the reserved prefix are refused at upsert.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cjkrag.errors import StoreError

DENSE = "dense"
SPARSE = "bm25"
Point = tuple[str, list[float], tuple[list[int], list[float]], dict[str, Any]]

RESERVED_PREFIX = "\x00cjkrag:"
BOOL_TRUE = RESERVED_PREFIX + "true"
BOOL_FALSE = RESERVED_PREFIX + "false"
META_FILE = "cjkrag-collection.json"


class ClientEngine:
    """qdrant-client (server, or local mode)."""

    def __init__(self, client: Any, collection: str, *, local: bool = False) -> None:
        from qdrant_client import models

        self.local = local  # local mode ignores payload indexes (and warns): none are made there
        self.c = client
        self.m = models
        self.collection = collection

    def exists(self) -> bool:
        return bool(self.c.collection_exists(self.collection))

    def meta(self) -> dict[str, Any]:
        info = self.c.get_collection(self.collection)
        return dict((info.config.metadata or {}).get("cjkrag") or {})

    def create(self, dim: int, meta: dict[str, Any], indexes: dict[str, str]) -> None:
        m = self.m
        self.c.create_collection(
            self.collection,
            vectors_config={DENSE: m.VectorParams(size=dim, distance=m.Distance.COSINE)},
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
            metadata={"cjkrag": meta},
        )
        kinds = {"keyword": m.PayloadSchemaType.KEYWORD, "bool": m.PayloadSchemaType.BOOL}
        for field, kind in {} if self.local else indexes.items():
            self.c.create_payload_index(self.collection, field, field_schema=kinds[kind], wait=True)

    def update_meta(self, meta: dict[str, Any]) -> None:
        self.c.update_collection(self.collection, metadata={"cjkrag": meta})

    def drop(self) -> None:
        self.c.delete_collection(self.collection)

    def upsert(self, points: Sequence[Point]) -> None:
        m = self.m
        structs = [
            m.PointStruct(
                id=pid,
                vector={DENSE: dense, SPARSE: m.SparseVector(indices=idx, values=val)},
                payload=payload,
            )
            for pid, dense, (idx, val), payload in points
        ]
        self.c.upsert(self.collection, points=structs, wait=True)

    def delete_ids(self, ids: Sequence[str]) -> None:
        self.c.delete(self.collection, points_selector=self.m.PointIdsList(points=list(ids)), wait=True)

    def delete_filter(self, flt: Any) -> None:
        self.c.delete(self.collection, points_selector=self.m.FilterSelector(filter=flt), wait=True)

    def search(
        self, vector: Any, using: str, limit: int, flt: Any, fields: list[str]
    ) -> list[tuple[float, dict[str, Any]]]:
        if using == SPARSE:
            vector = self.m.SparseVector(indices=vector[0], values=vector[1])
        res = self.c.query_points(
            self.collection, query=vector, using=using, limit=limit, query_filter=flt, with_payload=fields
        )
        return [(float(p.score), dict(p.payload or {})) for p in res.points]

    def scroll(
        self, flt: Any, fields: list[str], limit: int, offset: Any
    ) -> tuple[list[dict[str, Any]], Any]:
        records, nxt = self.c.scroll(
            self.collection,
            scroll_filter=flt,
            limit=limit,
            offset=offset,
            with_payload=fields,
            with_vectors=False,
        )
        return [dict(r.payload or {}) for r in records], nxt

    def count(self, flt: Any) -> int:
        return int(self.c.count(self.collection, count_filter=flt, exact=True).count)

    def close(self) -> None:
        self.c.close()


class EdgeEngine:
    """qdrant-edge-py: one shard folder per collection under ``root``."""

    def __init__(self, root: Path, collection: str) -> None:
        import qdrant_edge

        self.q = qdrant_edge
        self.path = root / collection
        self.shard: Any = None
        if self.exists():
            self.shard = qdrant_edge.EdgeShard.load(str(self.path))

    def exists(self) -> bool:
        return (self.path / META_FILE).is_file()

    def meta(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.path / META_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"cannot read {self.path / META_FILE}: {exc}; the shard folder is damaged"
            ) from exc

    def create(self, dim: int, meta: dict[str, Any], indexes: dict[str, str]) -> None:
        q = self.q
        if self.path.exists() and any(self.path.iterdir()):
            raise StoreError(
                f"Qdrant edge folder {self.path} exists without {META_FILE} (not made by cjkrag, or a create that "
                "was interrupted): move it away or set another `collection` name"
            )
        config = q.EdgeConfig(
            vectors={DENSE: q.EdgeVectorParams(size=dim, distance=q.Distance.Cosine)},
            sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        )
        self.shard = q.EdgeShard.create(str(self.path), config)
        kinds = {"keyword": q.PayloadSchemaType.Keyword, "bool": q.PayloadSchemaType.Keyword}
        for field, kind in indexes.items():  # booleans are stored as reserved strings here (see module doc)
            self.shard.update(q.UpdateOperation.create_field_index(field, kinds[kind]))
        self.shard.flush()
        self.update_meta(meta)  # written last: a folder without it is an unfinished create

    def update_meta(self, meta: dict[str, Any]) -> None:
        tmp = self.path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path / META_FILE)

    def drop(self) -> None:
        import shutil

        if self.shard is not None:
            self.shard.close()
            self.shard = None
        (self.path / META_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)

    def upsert(self, points: Sequence[Point]) -> None:
        q = self.q
        edge_points = [
            q.Point(
                id=pid,
                vector={DENSE: dense, SPARSE: q.SparseVector(indices=idx, values=val)},
                payload=_encode(payload),
            )
            for pid, dense, (idx, val), payload in points
        ]
        self.shard.update(q.UpdateOperation.upsert_points(edge_points))

    def delete_ids(self, ids: Sequence[str]) -> None:
        self.shard.update(self.q.UpdateOperation.delete_points(list(ids)))

    def delete_filter(self, flt: Any) -> None:
        self.shard.update(self.q.UpdateOperation.delete_points_by_filter(self.filter(flt)))

    def search(
        self, vector: Any, using: str, limit: int, flt: Any, fields: list[str]
    ) -> list[tuple[float, dict[str, Any]]]:
        q = self.q
        if using == SPARSE:
            vector = q.SparseVector(indices=vector[0], values=vector[1])
        request = q.QueryRequest(
            limit=limit,
            query=q.Query.Nearest(vector, using=using),
            filter=self.filter(flt) if flt is not None else None,
            with_payload=fields,
            with_vector=False,
        )
        return [(float(p.score), _decode(dict(p.payload or {}))) for p in self.shard.query(request)]

    def scroll(
        self, flt: Any, fields: list[str], limit: int, offset: Any
    ) -> tuple[list[dict[str, Any]], Any]:
        q = self.q
        request = q.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=self.filter(flt) if flt is not None else None,
            with_payload=fields,
            with_vector=False,
        )
        records, nxt = self.shard.scroll(request)
        return [_decode(dict(r.payload or {})) for r in records], nxt

    def count(self, flt: Any) -> int:
        q = self.q
        return int(
            self.shard.count(q.CountRequest(exact=True, filter=self.filter(flt) if flt is not None else None))
        )

    def close(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
            self.shard = None

    # -- qdrant_client.models.Filter -> qdrant_edge.Filter -------------------------------------------------
    def filter(self, flt: Any) -> Any:
        q = self.q
        parts = {}
        for name in ("must", "should", "must_not"):
            children = getattr(flt, name, None)
            if children is not None:
                children = children if isinstance(children, list) else [children]
                parts[name] = [self.condition(c) for c in children]
        if getattr(flt, "min_should", None) is not None:
            raise StoreError("Qdrant edge: min_should filters are not produced by cjkrag and not supported")
        return q.Filter(**parts)

    def condition(self, c: Any) -> Any:
        q = self.q
        kind = type(c).__name__
        if kind == "Filter":
            return self.filter(c)
        if kind == "IsEmptyCondition":
            return q.IsEmptyCondition(key=c.is_empty.key)
        if kind == "FieldCondition":
            if c.match is not None:
                match_kind = type(c.match).__name__
                if match_kind == "MatchValue":
                    return q.FieldCondition(key=c.key, match=q.MatchValue(value=_encode_value(c.match.value)))
                if match_kind == "MatchAny":
                    values = list(c.match.any)
                    if any(isinstance(v, bool) for v in values):
                        raise StoreError("Qdrant edge: MatchAny over booleans is not supported")
                    return q.FieldCondition(key=c.key, match=q.MatchAny(any=values))
                raise StoreError(f"Qdrant edge: match {match_kind} is not supported")
            if c.range is not None:
                r = c.range
                return q.FieldCondition(key=c.key, range=q.RangeFloat(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte))
        # fail closed: a condition this converter does not know must never be dropped (it could be the ACL)
        raise StoreError(f"Qdrant edge: filter condition {kind} is not supported")


def _encode_value(value: Any) -> Any:
    if isinstance(value, bool):
        return BOOL_TRUE if value else BOOL_FALSE
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, bool):
        return BOOL_TRUE if value else BOOL_FALSE
    if isinstance(value, str):
        if value.startswith(RESERVED_PREFIX):
            raise StoreError(f"value {value!r} starts with a prefix reserved by cjkrag's Qdrant edge adapter")
        return value
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if value == BOOL_TRUE:
        return True
    if value == BOOL_FALSE:
        return False
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
