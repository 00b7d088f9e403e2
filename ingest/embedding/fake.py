"""A deterministic, dependency-free embedder for unit tests (numpy only). It is a fake: no model at all.

Vectors are hashed character n-grams (1 to 3 characters of the lowercased text, whitespace removed),
signed and bucketed into ``dim`` dimensions, then L2-normalized: texts sharing characters get similar
vectors, so retrieval tests behave plausibly. Tokens are one per CJK/other character and one per
Latin/digit word; whitespace is not a token. ``count_tokens`` = tokens + 2 (like ``<s>``/``</s>``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")
_SPACE = re.compile(r"\s+")


class FakeEmbedder:
    """Hashed character n-gram vectors; same protocol as the real embedders, no dependencies."""

    def __init__(self, dim: int = 64, *, max_tokens: int = 512, ngrams: tuple[int, ...] = (1, 2, 3)) -> None:
        if dim < 2:
            raise ValueError(f"FakeEmbedder dim must be >= 2, got {dim}")
        if max_tokens < 3:
            raise ValueError(f"FakeEmbedder max_tokens must be >= 3, got {max_tokens}")
        self.name = f"fake:{dim}"
        self.max_tokens = max_tokens
        self._dim = dim
        self._ngrams = ngrams

    @property
    def dim(self) -> int:
        return self._dim

    def warm_up(self) -> None:
        """Nothing to load."""

    def _vector(self, text: str) -> np.ndarray:
        s = _SPACE.sub("", text.lower())
        v = np.zeros(self._dim, dtype=np.float64)
        for n in self._ngrams:
            for i in range(len(s) - n + 1):
                h = zlib.crc32(f"{n}\x00{s[i : i + n]}".encode())
                v[h % self._dim] += 1.0 if (h >> 31) & 1 else -1.0
        norm = float(np.linalg.norm(v))
        if norm == 0.0:  # empty text, or n-grams cancelling out: a fixed unit vector
            v[:] = 0.0
            v[zlib.crc32(s.encode()) % self._dim] = 1.0
            norm = 1.0
        return (v / norm).astype(np.float32)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of strings, not a single string")
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
            out[i] = self._vector(t)
        return out

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in _TOKEN.finditer(text)]

    def count_tokens(self, text: str) -> int:
        return len(self.token_offsets(text)) + 2

    def __repr__(self) -> str:
        return f"FakeEmbedder(dim={self._dim})"
