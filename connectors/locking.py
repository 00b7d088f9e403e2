"""cjkrag's own lock around an embedded store's files (Milvus Lite, Qdrant local/embedded).

Embedded engines allow one process per store file. Their own lock files are not enough: milvus-lite 2.5.1
unlinks ``.<name>.db.lock`` in ``stop()`` even when the open that stops it never acquired the lock, so a
refused ``cjkrag query`` used to delete the lock of a running ``cjkrag serve`` and let a later ``cjkrag
ingest`` open the same file. This lock is ours: an OS advisory lock (``fcntl.flock`` / ``msvcrt.locking``)
on ``<store path>.cjkrag.lock``, taken *before* the engine starts and held until the last store object of
this process on that path closes. The OS drops it when the process dies (even by ``kill -9``), so a crash
never leaves a stale lock; the file itself is never deleted (deleting it is what broke milvus-lite's).

Within one process, several store objects may share a path (reference-counted).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import IO

from cjkrag.errors import StoreUnavailable

__all__ = ["StoreInUse", "acquire_store_lock", "lock_path_for", "release_store_lock"]


class StoreInUse(StoreUnavailable):
    """Another process holds the embedded store's files."""


_guard = threading.Lock()
_held: dict[str, tuple[IO[str], int]] = {}  # resolved lock path -> (open file, users in this process)


def lock_path_for(store_path: str | Path) -> Path:
    p = Path(store_path).expanduser().resolve()
    return p.with_name(p.name + ".cjkrag.lock")


def _try_lock(handle: IO[str]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - not exercised on the Linux CI
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def acquire_store_lock(store_path: str | Path, what: str) -> None:
    """Take (or share, within this process) the lock of ``store_path``; StoreInUse if another process has it.

    ``what`` names the store in the error, e.g. ``"Milvus Lite file ./cjkrag-data/milvus.db"``.
    """
    path = lock_path_for(store_path)
    key = str(path)
    with _guard:
        if key in _held:
            handle, users = _held[key]
            _held[key] = (handle, users + 1)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while the store is open
        if not _try_lock(handle):
            handle.seek(0)
            owner = handle.read(200).strip()
            handle.close()
            who = f"process {owner}" if owner.isdigit() else "another process"
            raise StoreInUse(
                f"{what} is in use by {who} (lock {path}): an embedded store serves one process at a time. "
                "Stop the other cjkrag process (e.g. `cjkrag serve`) first, or search through that service, "
                "or use a store server (store.milvus.uri: http://host:19530, or a Qdrant/Weaviate/"
                "Elasticsearch server)"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _held[key] = (handle, 1)


def release_store_lock(store_path: str | Path) -> None:
    """Drop one use of the lock; the last one in this process releases it (the file stays)."""
    key = str(lock_path_for(store_path))
    with _guard:
        if key not in _held:
            return
        handle, users = _held[key]
        if users > 1:
            _held[key] = (handle, users - 1)
            return
        del _held[key]
        try:
            handle.seek(0)
            handle.truncate()
        finally:
            handle.close()  # closing the descriptor releases the OS lock
