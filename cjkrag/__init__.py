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

# torch's OpenMP threads spin while idle by default; next to the Milvus Lite engine (its own threads) on a
# small CPU that spinning made query embedding 10-30x slower here (p95 1.6 s instead of 63 ms). Passive
# waiting must be chosen before torch loads, so it is set (as a default the user can override) right here.
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
