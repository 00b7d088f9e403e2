"""cjkrag: hybrid retrieval for Chinese, Japanese and Korean text over real vector databases.

``import cjkrag`` stays light: no torch, no database client. ``cjkrag.open()`` returns an
:class:`~cjkrag.engine.Engine` whose models and store load on first use.

>>> import cjkrag
>>> engine = cjkrag.open()                      # packaged default, data under ./cjkrag-data
>>> engine.ingest(["docs/"], acl=["group:support"])
>>> hits = engine.search("如何重置密码", principals=["group:support"], top_k=5)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cjkrag.types import Document, Hit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cjkrag.config import Config
    from cjkrag.engine import Engine

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
