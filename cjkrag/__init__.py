"""cjkrag: hybrid retrieval for Chinese, Japanese and Korean text over real vector databases.

``import cjkrag`` stays light: no torch, no database client. ``cjkrag.open()`` returns an
:class:`~cjkrag.engine.Engine` whose models and store load on first use.

>>> import cjkrag
>>> engine = cjkrag.open()                      # packaged default, data under ./cjkrag-data
>>> engine.ingest(["docs/"], acl=["group:support"])
>>> hits = engine.search("如何重置密码", principals=["group:support"], top_k=5)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cjkrag.types import Document, Hit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cjkrag.config import Config
    from cjkrag.engine import Engine

# OpenMP thread policy (torch here; the Milvus Lite server, a child process, gets PASSIVE on its own: see
# connectors/milvus/store.py). Idle OpenMP threads spin by default; on a small or shared CPU a spinning
# thread steals the core the next parallel region needs. benchmarks/thread_policy.py compared, in one run
# (2 shared cores, load average ~10), p50 of one query embedding / a hybrid Engine.search at 10k chunks:
# PASSIVE 31 / 46 ms; libgomp's default bounded spin 244-357 / 162-320 ms; GOMP_SPINCOUNT=10000 174 / 184
# ms; ACTIVE 1,212 / 2,366 ms. So passive waiting stays the default (a dedicated machine may do better with
# a bounded spin: set OMP_WAIT_POLICY / GOMP_SPINCOUNT yourself, before importing cjkrag or torch). The
# thread budget is split too: query embeddings run on half the cores (embedding.query_threads), which
# measured 16 / 37 ms instead of 28 / 48 ms in one run (benchmarks/results/thread_policy-split.json).
# It must be chosen before torch loads, so it is set (as a default the user can override) right here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["Document", "Engine", "Hit", "__version__", "open"]


def open(config: str | Path | Mapping[str, Any] | Config | None = None) -> Engine:
    """An Engine for ``config``: a YAML path, a dict (overlaying the defaults), or None for the default."""
    from cjkrag.engine import open_engine

    return open_engine(config)


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from cjkrag.engine import Engine

        return Engine
    raise AttributeError(name)
