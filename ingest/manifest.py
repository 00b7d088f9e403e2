"""The ingestion manifest: what is stored for each document, written LAST, so it never claims more than the store holds.

One SQLite file per collection (beside an embedded store's file; under ``data_dir/manifests`` for a server
store). Per document: where it came from (``root``: the folder/file given, ``source_id``, ``source``: the
file), its content and access hashes, the chunker/analyzer/model versions its chunks were built with, the
ids of its chunks, and the time.

The protocol that makes a crash at any moment harmless:

1. :meth:`Manifest.begin` records the chunk ids about to be written as ``pending`` (before any upsert), so a
   crash leaves no chunk the manifest does not know about;
2. the chunks are upserted (new chunks visible before old ones go), then the stale ones are deleted
   (``chunk_ids`` + ``pending`` of earlier attempts, minus the new ids);
3. :meth:`Manifest.commit` writes the entry (hashes, versions, chunk ids) and clears ``pending``.

A document whose entry is not committed never counts as unchanged: the next run redoes it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cjkrag.errors import StoreError
from cjkrag.types import Document

SCHEMA_VERSION = "1"
_LOOKUP_CHUNK = 500  # ids per SQL "IN (...)" (SQLite allows 999 parameters in old builds)


@dataclass(frozen=True)
class Versions:
    """What the stored chunks of a document were built with; a change re-does exactly what it affects."""

    model: str  # embedding model (+ profile): a change re-embeds
    chunker: str  # max/overlap tokens (+ tokenizer via the model): a change re-chunks and re-embeds
    analyzer: str  # keyword analyzer settings: a change re-analyzes, vectors are reused


@dataclass
class Entry:
    doc_id: str
    root: str
    source_id: str
    source: str
    content_hash: str
    access_hash: str
    versions: Versions
    chunk_ids: list[str]
    pending_ids: list[str] = field(default_factory=list)
    complete: bool = True
    updated_at: float = 0.0

    def known_ids(self) -> set[str]:
        """Every chunk id this document may have in the store (committed + written by unfinished updates)."""
        return set(self.chunk_ids) | set(self.pending_ids)


class Manifest:
    """Thread-safe (one connection, one lock); every method is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS documents(
                    doc_id TEXT PRIMARY KEY,
                    root TEXT NOT NULL,
                    source_id TEXT NOT NULL,
                    source TEXT NOT NULL,
                    content_hash TEXT NOT NULL,
                    access_hash TEXT NOT NULL,
                    model TEXT NOT NULL,
                    chunker TEXT NOT NULL,
                    analyzer TEXT NOT NULL,
                    chunk_ids TEXT NOT NULL,
                    pending_ids TEXT NOT NULL,
                    complete INTEGER NOT NULL,
                    updated_at REAL NOT NULL);
                CREATE INDEX IF NOT EXISTS documents_root ON documents(root);
                """
            )
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the ingestion manifest {self.path} ({exc}): check the folder is writable; "
                "if the file is corrupt, delete it (the next run re-ingests everything once)"
            ) from None
        self._lock = threading.Lock()

    # -- reads ----------------------------------------------------------------------------------------
    def get_many(self, doc_ids: Iterable[str]) -> dict[str, Entry]:
        """The entries of ``doc_ids`` (missing ones absent): one query per 500 ids, never one per document."""
        ids = list(dict.fromkeys(doc_ids))
        found: dict[str, Entry] = {}
        with self._lock:
            for i in range(0, len(ids), _LOOKUP_CHUNK):
                part = ids[i : i + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(part))
                for row in self._db.execute(f"SELECT * FROM documents WHERE doc_id IN ({marks})", part):
                    e = _entry(row)
                    found[e.doc_id] = e
        return found

    def under_roots(self, roots: Sequence[str]) -> list[Entry]:
        """Entries whose documents came from one of ``roots`` (for --sync)."""
        out: list[Entry] = []
        with self._lock:
            for root in roots:
                out.extend(_entry(r) for r in self._db.execute("SELECT * FROM documents WHERE root = ?", (root,)))
        return out

    def by_source(self, source: str) -> list[Entry]:
        """Entries read from ``source`` (a file) or from under it (a folder)."""
        prefix = source.rstrip("/") + "/"
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM documents WHERE source = ? OR root = ? OR substr(source, 1, ?) = ?",
                (source, source, len(prefix), prefix),
            ).fetchall()
        return [_entry(r) for r in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM documents").fetchone()[0])

    def chunk_total(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT coalesce(sum(json_array_length(chunk_ids)), 0) FROM documents "
                                        "WHERE complete = 1").fetchone()[0])

    def iter_all(self) -> Iterator[Entry]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM documents ORDER BY doc_id").fetchall()
        for r in rows:
            yield _entry(r)

    # -- writes (each a transaction) ------------------------------------------------------------------
    def begin(self, items: Sequence[tuple[Entry, Sequence[str]]]) -> None:
        """Before upserting: add ``new_ids`` to each document's pending ids (a new document gets an
        incomplete entry). Nothing a crash leaves in the store is then unknown to the manifest."""
        now = time.time()
        with self._lock, self._tx():
            for e, new_ids in items:
                row = self._db.execute(
                    "SELECT pending_ids FROM documents WHERE doc_id = ?", (e.doc_id,)
                ).fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO documents VALUES (?,?,?,?,'','',?,?,?,'[]',?,0,?)",
                        (e.doc_id, e.root, e.source_id, e.source, e.versions.model, e.versions.chunker,
                         e.versions.analyzer, json.dumps(sorted(set(new_ids))), now),
                    )  # fmt: skip
                else:
                    pending = sorted(set(json.loads(row[0])) | set(new_ids))
                    self._db.execute(
                        "UPDATE documents SET pending_ids = ?, updated_at = ? WHERE doc_id = ?",
                        (json.dumps(pending), now, e.doc_id),
                    )

    def commit(self, entries: Sequence[Entry]) -> None:
        """After all chunks are in and the stale ones are gone: the entry, complete, pending cleared."""
        now = time.time()
        with self._lock, self._tx():
            for e in entries:
                self._db.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?,?,?,?,?,?,?,?,?,?,'[]',1,?)",
                    (e.doc_id, e.root, e.source_id, e.source, e.content_hash, e.access_hash,
                     e.versions.model, e.versions.chunker, e.versions.analyzer,
                     json.dumps(list(e.chunk_ids)), now),
                )  # fmt: skip

    def mark_deleting(self, doc_ids: Sequence[str]) -> None:
        """Before deleting chunks: the entry stops counting as stored (a crash then redoes the document)."""
        with self._lock, self._tx():
            for i in range(0, len(doc_ids), _LOOKUP_CHUNK):
                part = list(doc_ids[i : i + _LOOKUP_CHUNK])
                marks = ",".join("?" * len(part))
                self._db.execute(
                    f"UPDATE documents SET complete = 0, content_hash = '' WHERE doc_id IN ({marks})", part
                )

    def remove(self, doc_ids: Sequence[str]) -> None:
        with self._lock, self._tx():
            for i in range(0, len(doc_ids), _LOOKUP_CHUNK):
                part = list(doc_ids[i : i + _LOOKUP_CHUNK])
                self._db.execute(f"DELETE FROM documents WHERE doc_id IN ({','.join('?' * len(part))})", part)

    def adopt(self, rows: Iterable[tuple[str, str]]) -> int:
        """Record chunks found in the store that no entry knows (a store filled before the manifest existed):
        incomplete entries, so each document is redone once and its old chunks are cleaned up."""
        by_doc: dict[str, set[str]] = {}
        for doc_id, chunk_id in rows:
            by_doc.setdefault(doc_id, set()).add(chunk_id)
        now = time.time()
        with self._lock, self._tx():
            for doc_id, ids in by_doc.items():
                self._db.execute(
                    "INSERT OR IGNORE INTO documents VALUES (?,'','','','','','','','','[]',?,0,?)",
                    (doc_id, json.dumps(sorted(ids)), now),
                )
        return len(by_doc)

    def clear(self) -> None:
        with self._lock, self._tx():
            self._db.execute("DELETE FROM documents")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _entry(row: Sequence[object]) -> Entry:
    (doc_id, root, source_id, source, content_hash, access_hash, model, chunker, analyzer, chunk_ids,
     pending_ids, complete, updated_at) = row  # fmt: skip
    return Entry(
        doc_id=str(doc_id),
        root=str(root),
        source_id=str(source_id),
        source=str(source),
        content_hash=str(content_hash),
        access_hash=str(access_hash),
        versions=Versions(model=str(model), chunker=str(chunker), analyzer=str(analyzer)),
        chunk_ids=list(json.loads(str(chunk_ids))),
        pending_ids=list(json.loads(str(pending_ids))),
        complete=bool(complete),
        updated_at=float(updated_at),  # type: ignore[arg-type]
    )


def manifest_path(store_file: str | None, data_dir: Path, backend: str, collection: str) -> Path:
    """Beside an embedded store's file (``milvus.db`` -> ``milvus.db.<collection>.manifest``); for a server
    store under ``data_dir/manifests`` (so a server store's manifest lives on the machine that ingests)."""
    if store_file:
        p = Path(store_file)
        return p.with_name(f"{p.name}.{collection}.manifest.sqlite")
    return data_dir / "manifests" / f"{backend}.{collection}.manifest.sqlite"


def content_hash(doc: Document) -> str:
    """What the chunks and vectors depend on: text, title, metadata, language."""
    from cjkrag.ingest.records import _h

    meta = json.dumps(dict(doc.metadata), sort_keys=True, ensure_ascii=False, default=str)
    return _h(doc.text, doc.title, meta, doc.language or "")


def access_hash(doc: Document) -> str:
    """What only the access fields depend on (a change rewrites them without re-embedding)."""
    from cjkrag.ingest.records import _h

    return _h(json.dumps([sorted(doc.acl), sorted(doc.deny), doc.public, doc.tenant], ensure_ascii=False))
