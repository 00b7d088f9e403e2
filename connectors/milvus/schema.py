"""The Milvus collection schema of cjkrag, its compatibility check, and record -> row conversion.

The filter translator (``connectors/milvus/filters.py``) relies on exactly these field names and types.
VARCHAR limits are BYTES of UTF-8 (a CJK character is 3 bytes), so they are checked here, before any
write, with an error naming the chunk and the field.

Nothing here imports pymilvus at module level: :func:`build_schema` takes the module as an argument.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cjkrag.errors import StoreError
from cjkrag.types import ChunkRecord

SCHEMA_VERSION = 1  # the field set below; bump when it changes
SETTINGS_PREFIX = "cjkrag collection "  # the collection description: this prefix + the settings as JSON
MAX_TOP_K = 16384  # Milvus' limit for search ``limit`` and for query ``offset + limit``
ARRAY_CAPACITY = 1024
ARRAY_ELEMENT_BYTES = 256

# VARCHAR field -> max_length in bytes
VARCHAR_BYTES: dict[str, int] = {
    "chunk_id": 512,
    "doc_id": 1024,
    "text": 65535,
    "title": 2048,
    "tenant": 256,
    "language": 16,
    "doc_hash": 64,
    "keywords": 65535,
}
INT_FIELDS = ("start", "end", "chunk_index")
ARRAY_FIELDS = ("acl", "deny")

# What a hit carries back (``StoredHit.fields``) and what ``query`` may ask for.
OUTPUT_FIELDS: tuple[str, ...] = (
    "doc_id",
    "text",
    "title",
    "start",
    "end",
    "chunk_index",
    "acl",
    "deny",
    "public",
    "tenant",
    "language",
    "metadata",
    "doc_hash",
)
QUERYABLE_FIELDS = frozenset({"chunk_id", *OUTPUT_FIELDS, "keywords", "vector"})

BM25_FUNCTION = "keywords_bm25"
KEYWORD_ANALYZER: dict[str, Any] = {"tokenizer": "whitespace"}

# field -> scalar index tried at creation (INVERTED); engines that refuse one (Milvus Lite 2.5.1 refuses
# every index on ARRAY fields) simply go without it: filters still work, by scan.
SCALAR_INDEXES: tuple[str, ...] = ("doc_id", "tenant", "public", "language", "acl", "deny")


def settings(dim: int, analyzer: str) -> dict[str, Any]:
    """What a collection records about how it was built (compared on every reopen)."""
    return {"schema": SCHEMA_VERSION, "dim": dim, "distance": "cosine", "analyzer": analyzer}


def describe_settings(recorded: Mapping[str, Any]) -> str:
    return SETTINGS_PREFIX + json.dumps(dict(recorded), sort_keys=True)


def recorded_settings(description: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings in a ``describe_collection`` output's description; None for a collection made before
    cjkrag recorded them (or by something else)."""
    text = str(description.get("description") or "")
    if not text.startswith(SETTINGS_PREFIX):
        return None
    try:
        found = json.loads(text[len(SETTINGS_PREFIX) :])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


_LABELS = {"schema": "schema version", "dim": "vector dimension", "distance": "distance",
           "analyzer": "analyzer version"}  # fmt: skip


def settings_problems(description: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """Each recorded setting that differs from ``want``, naming both values ([] when none is recorded)."""
    stored = recorded_settings(description)
    if stored is None:
        return []
    return [
        f"{_LABELS.get(key, key)} is {stored.get(key)!r} in the collection but {value!r} here"
        for key, value in want.items()
        if stored.get(key) != value
    ]


def build_schema(pymilvus: Any, dim: int, recorded: Mapping[str, Any] | None = None) -> Any:
    """The ``CollectionSchema`` for vectors of ``dim`` dimensions (``pymilvus`` is the imported module);
    ``recorded`` (:func:`settings`) goes into the description."""
    DataType = pymilvus.DataType
    schema = pymilvus.MilvusClient.create_schema(
        auto_id=False,
        enable_dynamic_field=False,
        description=describe_settings(recorded) if recorded is not None else "",
    )
    schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=VARCHAR_BYTES["chunk_id"])
    for name in ("doc_id", "text", "title"):
        schema.add_field(name, DataType.VARCHAR, max_length=VARCHAR_BYTES[name])
    for name in INT_FIELDS:
        schema.add_field(name, DataType.INT64)
    for name in ARRAY_FIELDS:
        schema.add_field(
            name,
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=ARRAY_CAPACITY,
            max_length=ARRAY_ELEMENT_BYTES,
        )
    schema.add_field("public", DataType.BOOL)
    for name in ("tenant", "language", "doc_hash"):
        schema.add_field(name, DataType.VARCHAR, max_length=VARCHAR_BYTES[name])
    schema.add_field("metadata", DataType.JSON)
    schema.add_field(
        "keywords",
        DataType.VARCHAR,
        max_length=VARCHAR_BYTES["keywords"],
        enable_analyzer=True,
        analyzer_params=KEYWORD_ANALYZER,
    )
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_function(
        pymilvus.Function(
            name=BM25_FUNCTION,
            function_type=pymilvus.FunctionType.BM25,
            input_field_names=["keywords"],
            output_field_names=["sparse"],
        )
    )
    return schema


def _type_name(value: Any) -> str:
    return str(getattr(value, "name", value)).upper()


def schema_problems(description: Mapping[str, Any], dim: int | None) -> list[str]:
    """What makes an existing collection (``describe_collection`` output) unusable; [] if compatible.

    ``dim=None`` checks the fields only.
    """
    fields = {f["name"]: f for f in description.get("fields", [])}
    expected: dict[str, str] = {
        "chunk_id": "VARCHAR",
        "doc_id": "VARCHAR",
        "text": "VARCHAR",
        "title": "VARCHAR",
        "start": "INT64",
        "end": "INT64",
        "chunk_index": "INT64",
        "acl": "ARRAY",
        "deny": "ARRAY",
        "public": "BOOL",
        "tenant": "VARCHAR",
        "language": "VARCHAR",
        "doc_hash": "VARCHAR",
        "metadata": "JSON",
        "keywords": "VARCHAR",
        "sparse": "SPARSE_FLOAT_VECTOR",
        "vector": "FLOAT_VECTOR",
    }
    problems: list[str] = []
    for name, type_name in expected.items():
        field = fields.get(name)
        if field is None:
            problems.append(f"field {name!r} is missing")
        elif _type_name(field.get("type")) != type_name:
            problems.append(f"field {name!r} is {_type_name(field.get('type'))}, expected {type_name}")
    if "chunk_id" in fields and not fields["chunk_id"].get("is_primary"):
        problems.append("field 'chunk_id' is not the primary key")
    keywords = fields.get("keywords")
    if keywords is not None and str(keywords.get("params", {}).get("enable_analyzer", "")).lower() != "true":
        problems.append("field 'keywords' has no analyzer (BM25 needs enable_analyzer=True)")
    vector = fields.get("vector")
    if dim is not None and vector is not None:
        have = int(vector.get("params", {}).get("dim", -1))
        if have != dim:
            problems.append(f"vector dimension is {have}, the embedder gives {dim}")
    return problems


def existing_dim(description: Mapping[str, Any]) -> int | None:
    for field in description.get("fields", []):
        if field.get("name") == "vector":
            return int(field.get("params", {}).get("dim", 0)) or None
    return None


def _check_bytes(chunk_id: str, name: str, value: str, limit: int) -> None:
    size = len(value.encode("utf-8"))
    if size > limit:
        raise StoreError(
            f"chunk {chunk_id!r}: field {name!r} is {size} bytes of UTF-8 (CJK characters take 3 bytes), "
            f"over the Milvus limit of {limit}: split the document into smaller chunks"
            + (" or shorten the value" if name != "text" else "")
        )


def _check_array(chunk_id: str, name: str, values: Sequence[str]) -> list[str]:
    items = list(values)
    if len(items) > ARRAY_CAPACITY:
        raise StoreError(
            f"chunk {chunk_id!r}: field {name!r} has {len(items)} principals, over the limit of "
            f"{ARRAY_CAPACITY}: use groups instead of listing users"
        )
    for item in items:
        if not isinstance(item, str):
            raise StoreError(f"chunk {chunk_id!r}: field {name!r} holds {item!r}, expected strings")
        _check_bytes(chunk_id, f"{name}[]", item, ARRAY_ELEMENT_BYTES)
    return items


def keywords_text(chunk_id: str, keywords: Sequence[str]) -> str:
    """The analyzer's tokens joined by single spaces (what the whitespace tokenizer splits back)."""
    for token in keywords:
        if not isinstance(token, str) or any(ch.isspace() for ch in token):
            raise StoreError(
                f"chunk {chunk_id!r}: keyword {token!r} is not a whitespace-free string; keywords must be "
                "the analyzer's tokens (cjkrag.pipeline.analyzer), one token per item"
            )
    return " ".join(t for t in keywords if t)


def record_to_row(record: ChunkRecord, dim: int) -> dict[str, Any]:
    """Validate one record and turn it into a Milvus row. Raises StoreError naming the chunk and field."""
    cid = record.chunk_id
    if not isinstance(cid, str) or not cid:
        raise StoreError(f"a chunk has chunk_id {cid!r}: chunk ids must be non-empty strings")
    row: dict[str, Any] = {"chunk_id": cid}
    for name in ("doc_id", "text", "title", "tenant", "language", "doc_hash"):
        value = getattr(record, name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise StoreError(f"chunk {cid!r}: field {name!r} is {type(value).__name__}, expected str")
        _check_bytes(cid, name, value, VARCHAR_BYTES[name])
        row[name] = value
    _check_bytes(cid, "chunk_id", cid, VARCHAR_BYTES["chunk_id"])
    for name in ("chunk_id", "doc_id"):
        if any(ord(ch) < 0x20 and ch != "\t" for ch in row[name]):
            raise StoreError(
                f"chunk {cid!r}: {name} holds a line break or control character, which Milvus filter "
                "expressions cannot match (it could never be updated or deleted): remove it"
            )
    for name in INT_FIELDS:
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise StoreError(f"chunk {cid!r}: field {name!r} is {value!r}, expected an int")
        row[name] = value
    row["acl"] = _check_array(cid, "acl", record.acl)
    row["deny"] = _check_array(cid, "deny", record.deny)
    row["public"] = bool(record.public)
    if not isinstance(record.metadata, Mapping):
        raise StoreError(f"chunk {cid!r}: metadata is {type(record.metadata).__name__}, expected a dict")
    row["metadata"] = dict(record.metadata)
    text = keywords_text(cid, record.keywords)
    _check_bytes(cid, "keywords", text, VARCHAR_BYTES["keywords"])
    row["keywords"] = text
    vector = [float(x) for x in record.vector]
    if len(vector) != dim:
        raise StoreError(
            f"chunk {cid!r}: vector has {len(vector)} dimensions, the collection has {dim}: "
            "embed with the model the collection was built with, or use another collection"
        )
    if not all(math.isfinite(x) for x in vector):
        raise StoreError(f"chunk {cid!r}: vector holds NaN or infinity")
    row["vector"] = vector
    return row


def row_size(row: Mapping[str, Any]) -> int:
    """A rough byte size of a row, to keep insert messages well under gRPC's limit."""
    return (
        len(row["text"].encode("utf-8"))
        + len(row["keywords"].encode("utf-8"))
        + 4 * len(row["vector"])
        + 512
        + len(str(row["metadata"]))
    )


def plain_value(value: Any) -> Any:
    """Engine containers (protobuf repeated fields, numpy scalars) as plain Python values."""
    if value is None or isinstance(value, (str, bool, int, float, dict)):
        return value
    if isinstance(value, (list, tuple)) or type(value).__name__.startswith("Repeated"):
        return [plain_value(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def batches(rows: list[dict[str, Any]], max_rows: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """Rows in insert batches of at most ``max_rows`` rows and about ``max_bytes`` bytes."""
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        rs = row_size(row)
        if batch and (len(batch) >= max_rows or size + rs > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += rs
    if batch:
        yield batch
