"""The embedder protocol, shared by ingestion (passages) and the query pipeline (queries)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Turns text into L2-normalized float32 vectors, and counts tokens the way the model does."""

    name: str
    #: Largest input the model accepts, in tokens, special tokens and the prefix included.
    max_tokens: int

    @property
    def dim(self) -> int: ...

    def warm_up(self) -> None:
        """Load weights (heavy); called once before first use."""

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, normalized; the model's passage prefix/prompt is added here."""

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, normalized; the model's query prefix/prompt is added here."""

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text`` as a passage: prefix and special tokens included."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text``'s tokens (no prefix, no special tokens), in order."""
