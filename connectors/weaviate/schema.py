"""Weaviate collection properties and their verification (pure: no client needed, unit-tested).

Properties (self-provided vectors, no vectorizer module): exact-match text fields (``chunk_id``, ``doc_id``,
``title``, ``tenant``, ``language``, ``doc_hash``) and ``acl``/``deny`` (``text[]``) with ``field``
tokenization (the whole value is one token), ``public`` bool, offsets int, ``text`` stored only, and
``keywords`` (the cjkrag analyzer's tokens joined by spaces) with ``whitespace`` tokenization for BM25,
``metadata_json`` (the whole metadata, stored only) and one typed property per filterable metadata key
(``meta_<key>``, added when first written: :func:`metadata_property`; text ones ``field``-tokenized).

Why verification matters (issue 8, item 4): the ACL clause is ``contains_any``/``not_`` on ``acl``/``deny``.
With Weaviate's default ``word`` tokenization ``user:alice`` is split into ``user`` and ``alice``, and
``group:eng-ops`` matches a filter for ``group:eng``; a deny then fails open or an allow widens. A collection
whose access properties are not ``field``-tokenized is refused (:func:`property_problems`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SCHEMA_VERSION = 1
EXACT_TEXT = ("chunk_id", "doc_id", "title", "tenant", "language", "doc_hash")
EXACT_ARRAYS = ("acl", "deny")
ACCESS_FIELDS = ("acl", "deny", "doc_id", "tenant", "chunk_id")
STORED_ONLY = ("text", "metadata_json")  # not indexed: their tokenization does not matter


def properties() -> list[dict[str, Any]]:
    """The collection's properties as plain dicts (``name``, ``data_type``, ``tokenization``, index flags)."""
    props: list[dict[str, Any]] = [
        {"name": n, "data_type": "text", "tokenization": "field", "filterable": True, "searchable": False}
        for n in EXACT_TEXT
    ]
    props += [
        {"name": n, "data_type": "text[]", "tokenization": "field", "filterable": True, "searchable": False}
        for n in EXACT_ARRAYS
    ]
    props += [
        {"name": "public", "data_type": "boolean", "tokenization": None, "filterable": True, "searchable": False},
        {"name": "start", "data_type": "int", "tokenization": None, "filterable": True, "searchable": False},
        {"name": "end", "data_type": "int", "tokenization": None, "filterable": True, "searchable": False},
        {"name": "chunk_index", "data_type": "int", "tokenization": None, "filterable": True, "searchable": False},
        {"name": "text", "data_type": "text", "tokenization": "field", "filterable": False, "searchable": False},
        {"name": "keywords", "data_type": "text", "tokenization": "whitespace", "filterable": False,
         "searchable": True},
        {"name": "metadata_json", "data_type": "text", "tokenization": "field", "filterable": False,
         "searchable": False},
    ]  # fmt: skip
    return props


def metadata_property(name: str, data_type: str) -> dict[str, Any]:
    """A flattened metadata property (``meta_category``): filterable, text ones ``field``-tokenized."""
    text = data_type in ("text", "text[]")
    return {"name": name, "data_type": data_type, "tokenization": "field" if text else None, "filterable": True,
            "searchable": False}  # fmt: skip


def client_property(wvc: Any, p: dict[str, Any]) -> Any:
    """One property dict as a ``weaviate.classes.config.Property`` (``wvc`` = that module)."""
    tokens = {"field": wvc.Tokenization.FIELD, "whitespace": wvc.Tokenization.WHITESPACE, None: None}
    return wvc.Property(
        name=p["name"],
        data_type=wvc.DataType(p["data_type"]),
        tokenization=tokens[p["tokenization"]],
        index_filterable=p["filterable"],
        index_searchable=p["searchable"],
    )


def client_properties(wvc: Any) -> list[Any]:
    """The collection's properties as ``weaviate.classes.config.Property`` objects (``wvc`` = that module)."""
    return [client_property(wvc, p) for p in properties()]


def _plain(value: Any) -> str | None:
    """An enum (``Tokenization.FIELD``, ``DataType.TEXT_ARRAY``) or string as its lowercase value."""
    if value is None:
        return None
    return str(getattr(value, "value", value)).lower()


def existing_properties(config: Any) -> list[dict[str, Any]]:
    """Plain property dicts of a v4 ``CollectionConfig`` (``collection.config.get()``)."""
    return [
        {
            "name": p.name,
            "data_type": _plain(p.data_type),
            "tokenization": _plain(getattr(p, "tokenization", None)),
            "filterable": getattr(p, "index_filterable", None),
            "searchable": getattr(p, "index_searchable", None),
        }
        for p in config.properties
    ]


def property_problems(existing: Iterable[Mapping[str, Any]]) -> list[str]:
    """What makes an existing collection unsafe or unusable; [] if every property is as cjkrag needs."""
    have = {str(p.get("name")): p for p in existing}
    problems: list[str] = []
    for want in properties():
        name = want["name"]
        got = have.get(name)
        if got is None:
            problems.append(f"property {name!r} is missing")
            continue
        data_type, tokenization = _plain(got.get("data_type")), _plain(got.get("tokenization"))
        if data_type != want["data_type"]:
            problems.append(f"property {name!r} is {data_type}, expected {want['data_type']}")
        if (
            want["tokenization"] is not None
            and name not in STORED_ONLY
            and tokenization != want["tokenization"]
        ):
            why = (
                " (ACL/deny values would be split into words: access fails open)"
                if name in ACCESS_FIELDS
                else ""
            )
            problems.append(
                f"property {name!r} has {tokenization!r} tokenization, expected {want['tokenization']!r}{why}"
            )
        if want["filterable"] and got.get("filterable") is False:
            problems.append(f"property {name!r} is not filterable")
    return problems


def metadata_problems(existing: Iterable[Mapping[str, Any]], wanted: Mapping[str, str]) -> list[str]:
    """Conflicts between flattened metadata about to be written (``{property: data_type}``) and the
    collection's properties: another type, or text not ``field``-tokenized (filters would match words)."""
    have = {str(p.get("name")): p for p in existing}
    problems = []
    for name, data_type in sorted(wanted.items()):
        got = have.get(name)
        if got is None:
            continue
        got_type, tokenization = _plain(got.get("data_type")), _plain(got.get("tokenization"))
        if got_type != data_type:
            problems.append(
                f"property {name!r} is {got_type} in the collection but this chunk has a {data_type}"
            )
        elif data_type in ("text", "text[]") and tokenization != "field":
            problems.append(f"property {name!r} has {tokenization!r} tokenization, expected 'field'")
    return problems
