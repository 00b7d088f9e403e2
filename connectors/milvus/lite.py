"""Milvus Lite (the embedded engine of a ``.db`` file): importing it, and one server per file shared by every
:class:`~cjkrag.connectors.milvus.store.MilvusStore` that opened it (the last one to close stops it and frees
the file). Moved out of ``store.py`` unchanged.
"""

from __future__ import annotations

import importlib.metadata
import sys
import threading
import types

from cjkrag.connectors.locking import release_store_lock

_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix://")

# Milvus Lite servers (one child process per .db file) opened by MilvusStore objects: path -> open stores.
_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}


def is_lite_uri(uri: str) -> bool:
    return not uri.lower().startswith(_SERVER_SCHEMES)


def import_milvus_lite() -> None:
    """Import ``milvus_lite``; 2.5.1 does ``from pkg_resources import ...`` only to read its version."""
    if "milvus_lite" in sys.modules:
        return
    shim = None
    if "pkg_resources" not in sys.modules:  # importing the real one is slow and warns: stand in briefly
        shim = types.ModuleType("pkg_resources")
        shim.DistributionNotFound = importlib.metadata.PackageNotFoundError  # type: ignore[attr-defined]
        shim.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
            version=importlib.metadata.version(name)
        )
        sys.modules["pkg_resources"] = shim
    try:
        import milvus_lite  # noqa: F401
    finally:
        if shim is not None and sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]



def lite_opened(path: str) -> None:
    """A store opened the Lite file ``path`` (its store lock is already held)."""
    with _lite_lock:
        _lite_users[path] = _lite_users.get(path, 0) + 1


def lite_closed(path: str) -> None:
    """A store closed ``path``: release its lock; the last one also stops the file's Lite server."""
    with _lite_lock:
        _lite_users[path] -= 1
        last = _lite_users[path] == 0
        if last:
            del _lite_users[path]
    if last:
        from milvus_lite.server_manager import server_manager_instance

        try:
            server_manager_instance.release_server(path)
        finally:
            release_store_lock(path)
    else:
        release_store_lock(path)
