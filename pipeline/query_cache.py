"""A bounded, thread-safe LRU cache of query embeddings (``retrieval.query_cache_size``).

The key is (model name, query prefix/prompt, text): a vector is reused only for the same text embedded the
same way by the same model. Query vectors are a pure function of that key, so a hit returns exactly what
embedding again would (the tests check it); nothing about the caller (principals, filters) is in a value.
Memory is bounded: ``size`` entries of ``dim`` floats (1024 x 384 floats ~ 1.5 MB for e5-small).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

Key = tuple[str, str, str]


class QueryEmbeddingCache:
    """LRU of query vectors; ``size`` 0 disables it (every call embeds)."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"retrieval.query_cache_size must be an int >= 0, got {size!r}")
        self.size = size
        self._data: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_many(
        self,
        model: str,
        prefix: str,
        texts: Sequence[str],
        embed: Callable[[list[str]], np.ndarray],
    ) -> list[np.ndarray]:
        """Vectors of ``texts`` (in order): cached ones, the rest from one ``embed(missing)`` call."""
        keys = [(model, prefix, t) for t in texts]
        found: dict[int, np.ndarray] = {}
        if self.size:
            with self._lock:
                for i, k in enumerate(keys):
                    v = self._data.get(k)
                    if v is not None:
                        self._data.move_to_end(k)
                        found[i] = v
                self.hits += len(found)
                self.misses += len(keys) - len(found)
        missing = [i for i in range(len(texts)) if i not in found]
        if missing:
            distinct = list(dict.fromkeys(texts[i] for i in missing))
            vectors = embed(distinct)
            by_text = {t: np.array(vectors[j], dtype=np.float32) for j, t in enumerate(distinct)}
            for v in by_text.values():
                v.setflags(write=False)  # shared between callers: nobody may change a cached vector
            for i in missing:
                found[i] = by_text[texts[i]]
            if self.size:
                with self._lock:
                    for t, v in by_text.items():
                        self._data[(model, prefix, t)] = v
                        self._data.move_to_end((model, prefix, t))
                    while len(self._data) > self.size:
                        self._data.popitem(last=False)
        return [found[i] for i in range(len(texts))]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
