"""A cache of Milvus Lite's NOT resolutions (``lite_negation.py``), valid until the next write to the file.

Every Lite search whose filter holds a NOT that Lite cannot write (the access clause's deny, always) first
looks up the ids of the chunks to exclude: a count and a query, two round trips and ~7 ms per search at 10k
chunks, the same answer every time until the collection changes. So the answers are kept, keyed by the
exact expression looked up (the principals are literals inside it) and the limit, and are valid only while
nothing was written to the Lite file since they were read.

Why this cannot serve a stale exclusion list: a Lite file has exactly one owner process (Milvus Lite and
``connectors/locking.py`` both refuse a second one), so every write to it goes through a
:class:`~cjkrag.connectors.milvus.store.MilvusStore` in this process, and each write bumps the file's
generation before it starts and after it ends. An answer is stored only if no write was in flight and the
generation did not move while it was read, and is used only at that same generation. A Milvus server has
other writers, but needs no resolution (it has ``not``), so nothing is cached for it.

Bounded: at most ``MAX_ENTRIES`` answers and ``MAX_IDS`` ids in all (least recently used go first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

MAX_ENTRIES = 256
MAX_IDS = 200_000

_lock = threading.Lock()
_generation: dict[str, int] = {}  # Lite file -> generation
_writing: dict[str, int] = {}  # Lite file -> writes in flight
_entries: OrderedDict[tuple[str, str, str, int], tuple[int, list[str] | None]] = OrderedDict()
_ids = 0


def write_begin(path: str) -> None:
    """A write to ``path`` starts: nothing read from now until :func:`write_end` is cached."""
    with _lock:
        _generation[path] = _generation.get(path, 0) + 1
        _writing[path] = _writing.get(path, 0) + 1


def write_end(path: str) -> None:
    """The write to ``path`` ended (or failed): every answer read before is stale."""
    with _lock:
        _generation[path] = _generation.get(path, 0) + 1
        _writing[path] = max(0, _writing.get(path, 0) - 1)


def resolve(
    path: str, collection: str, expr: str, limit: int, lookup: Callable[[str, int], list[str] | None]
) -> list[str] | None:
    """``lookup(expr, limit)`` (chunk ids, or None when over ``limit``), from the cache when nothing was
    written to ``path`` since it was read. The list returned is a copy: callers may keep or change it."""
    global _ids
    key = (path, collection, expr, limit)
    with _lock:
        generation = _generation.get(path, 0)
        quiet = _writing.get(path, 0) == 0
        found = _entries.get(key)
        if found is not None and found[0] == generation and quiet:
            _entries.move_to_end(key)
            return None if found[1] is None else list(found[1])
    ids = lookup(expr, limit)
    size = len(ids) if ids is not None else 0
    with _lock:
        if not quiet or _writing.get(path, 0) or _generation.get(path, 0) != generation or size > MAX_IDS:
            return ids
        old = _entries.pop(key, None)
        if old is not None and old[1] is not None:
            _ids -= len(old[1])
        _entries[key] = (generation, None if ids is None else list(ids))
        _ids += size
        while _entries and (len(_entries) > MAX_ENTRIES or _ids > MAX_IDS):
            _, (_, dropped) = _entries.popitem(last=False)
            _ids -= len(dropped) if dropped is not None else 0
    return ids


def forget(path: str) -> None:
    """Drop every answer about ``path`` (its store closed: the file may change hands)."""
    global _ids
    with _lock:
        _generation[path] = _generation.get(path, 0) + 1
        for key in [k for k in _entries if k[0] == path]:
            _, dropped = _entries.pop(key)
            _ids -= len(dropped) if dropped is not None else 0


def size() -> tuple[int, int]:
    """(answers, ids) held now (for tests and logs)."""
    with _lock:
        return len(_entries), _ids
