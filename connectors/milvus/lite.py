"""Milvus Lite (the embedded engine of a ``.db`` file): importing it, and one server per file shared by every
:class:`~cjkrag.connectors.milvus.store.MilvusStore` that opened it (the last one to close stops it and frees
the file), and the environment its server process starts with.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import threading
import types
from collections.abc import Iterator

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



#: the OpenMP wait policy of the Milvus Lite server process (override: CJKRAG_LITE_OMP_WAIT_POLICY; empty =
#: inherit this process's environment). See cjkrag/__init__.py and benchmarks/thread_policy.py.
LITE_OMP_WAIT_POLICY = "PASSIVE"


@contextlib.contextmanager
def lite_server_env() -> Iterator[None]:
    """The environment a Milvus Lite server starts with (it copies ``os.environ`` when it starts).

    Its OpenMP threads wait passively: spinning server threads steal the CPU that torch (query embedding,
    in this process, with its own bounded spin) needs, and the server gains nothing from spinning between
    searches (measured: benchmarks/thread_policy.py). Set only while the client connects (which starts the
    server), under the Lite lock; this process's own OpenMP read its settings when it loaded.
    """
    policy = os.environ.get("CJKRAG_LITE_OMP_WAIT_POLICY", LITE_OMP_WAIT_POLICY)
    if not policy:
        yield
        return
    with _lite_lock:
        saved = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        os.environ["OMP_WAIT_POLICY"] = policy
        os.environ.pop("GOMP_SPINCOUNT", None)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


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
