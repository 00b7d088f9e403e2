"""Cross-encoder reranking (sentence-transformers ``CrossEncoder``) with windowing of long passages.

A cross-encoder reads ``[CLS] query [SEP] passage [SEP]`` and outputs one relevance logit. A passage
that does not fit next to the query in ``max_length`` tokens (counted with the model's own tokenizer)
is scored in overlapping windows of the passage and keeps its best window's score, so relevant text
at the end of a long chunk is not truncated away. Windows are cut at token boundaries (character
offsets from the fast tokenizer); the last window is aligned to the passage end. A query longer than
half of ``max_length`` is cut to that half first; past that, the tokenizer's own truncation applies
(it then trims the passage side, ``only_second`` style).

Scores are the model's logits passed through a sigmoid (``activation="sigmoid"``, in float64 so strong
matches do not all saturate to 1.0) or the raw logits (``activation="identity"``); higher is better.

``import cjkrag.pipeline.rerank`` is light: torch / sentence-transformers load in :meth:`warm_up`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from cjkrag.errors import ConfigError, InputError, ModelError, missing

T = TypeVar("T")
log = logging.getLogger(__name__)

NO_SCORE = float("-inf")
"""Score :meth:`CrossEncoderReranker.rerank` gives items past ``top_n`` (not scored, kept in order)."""


@runtime_checkable
class Reranker(Protocol):
    """Rescores (query, passage) pairs; higher is better."""

    name: str

    def warm_up(self) -> None:
        """Load weights (heavy); called once before first use (``score`` calls it if needed)."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One score per passage, in input order."""

    def rerank(
        self, query: str, items: list[T], text_of: Callable[[T], str], top_n: int
    ) -> list[tuple[T, float]]:
        """The first ``top_n`` items reordered by score, then the rest unscored in their order."""


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` loaded from a model id or a local folder.

    ``device="auto"`` picks CUDA (weights in fp16) when available, else CPU (fp32). Models load
    offline-friendly: a local folder is used as is; an id is looked up in the Hugging Face cache and
    downloaded only if allowed (``HF_HUB_OFFLINE`` unset). ``window_overlap_tokens`` is the overlap of
    consecutive windows of a long passage; ``max_windows`` caps the windows per passage (the first
    ones are kept; 1 means plain head truncation). Thread-safe: one lock serializes loading and scoring.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        batch_size: int = 16,
        max_length: int = 512,
        window_overlap_tokens: int = 64,
        max_windows: int = 16,
        activation: Literal["sigmoid", "identity"] = "sigmoid",
        trust_remote_code: bool = False,
    ) -> None:
        if not model or not str(model).strip():
            raise ConfigError("rerank.model is empty: give a cross-encoder id or a local folder, or 'none'")
        limits = {
            "rerank.batch_size": (batch_size, 1),
            "rerank.max_length": (max_length, 8),
            "rerank.window_overlap_tokens": (window_overlap_tokens, 0),
            "rerank.max_windows": (max_windows, 1),
        }
        for key, (value, low) in limits.items():
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")
        if activation not in ("sigmoid", "identity"):
            raise ConfigError(f"rerank.activation must be 'sigmoid' or 'identity', got {activation!r}")
        self.name = str(model)
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.window_overlap_tokens = window_overlap_tokens
        self.max_windows = max_windows
        self.activation = activation
        self.trust_remote_code = trust_remote_code
        self.resolved_device: str | None = None  # set by warm_up: "cuda" / "mps" / "cpu" / as given
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ loading
    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch
                from sentence_transformers import CrossEncoder
            except ImportError as exc:
                raise missing("gpu", "sentence-transformers") from exc
            from cjkrag.ingest.embedding.sentence_transformer import resolve_device

            device = resolve_device(self.device, key="rerank.device")
            source = Path(self.name).expanduser()
            is_local = source.is_dir()
            looks_like_path = (
                self.name.startswith((".", "/", "~")) or "\\" in self.name or self.name.count("/") > 1
            )
            if not is_local and looks_like_path:
                raise ModelError(
                    f"rerank.model {self.name!r}: no such folder; give an existing local folder "
                    "(with config.json and the tokenizer files) or a model id such as BAAI/bge-reranker-v2-m3"
                )
            try:
                model = CrossEncoder(
                    str(source) if is_local else self.name,
                    device=device,
                    max_length=self.max_length,
                    trust_remote_code=self.trust_remote_code,
                    activation_fn=torch.nn.Identity(),
                )
            except Exception as exc:  # OSError / ValueError / HF hub errors: all mean "cannot load"
                where = "the local folder" if is_local else "the Hugging Face cache (or the Hub)"
                raise ModelError(
                    f"rerank.model {self.name!r}: cannot load a cross-encoder from {where}: "
                    f"{type(exc).__name__}: {' '.join(str(exc).split()).rstrip('.')}. Fix: download it once where the "
                    f"Hub is reachable (`hf download {self.name}`) and run with HF_HUB_OFFLINE=1, or point "
                    "rerank.model to a local folder saved with save_pretrained"
                ) from exc
            if int(getattr(model, "num_labels", 1)) != 1:
                raise ModelError(
                    f"rerank.model {self.name!r} has {model.num_labels} output labels; a reranker must be a "
                    "cross-encoder with a single relevance logit (num_labels=1)"
                )
            if str(device).startswith("cuda"):
                model.half()
            model.eval()
            tokenizer = model.tokenizer
            if tokenizer is None:
                raise ModelError(f"rerank.model {self.name!r} has no text tokenizer; it cannot rerank text")
            if not getattr(tokenizer, "is_fast", False):
                log.warning(
                    "rerank.model %r has a slow tokenizer: long passages are truncated, not windowed",
                    self.name,
                )
            self._tokenizer = tokenizer
            self.resolved_device = device
            self._model = model

    # ------------------------------------------------------------------ windows
    def _token_spans(self, text: str) -> list[tuple[int, int]]:
        enc = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [(int(a), int(b)) for a, b in enc["offset_mapping"] if b > a]

    def _fit_query(self, query: str) -> tuple[str, int]:
        """The query, cut to half of max_length tokens if longer, and its token count."""
        if not getattr(self._tokenizer, "is_fast", False):
            return query, 0
        spans = self._token_spans(query)
        limit = self.max_length // 2
        if len(spans) > limit:
            return query[: spans[limit - 1][1]], limit
        return query, len(spans)

    def window_spans(self, query: str, passage: str) -> list[tuple[int, int]]:
        """Character spans of the passage windows scored against ``query`` (one span when it fits)."""
        self.warm_up()
        with self._lock:
            _, q_tokens = self._fit_query(query)
            return self._window_spans(q_tokens, passage)

    def _window_spans(self, q_tokens: int, passage: str) -> list[tuple[int, int]]:
        whole = [(0, len(passage))]
        if not getattr(self._tokenizer, "is_fast", False):
            return whole
        special = int(self._tokenizer.num_special_tokens_to_add(pair=True))
        budget = self.max_length - special - q_tokens
        spans = self._token_spans(passage)
        if len(spans) <= budget or budget < 1:
            return whole
        overlap = min(self.window_overlap_tokens, budget // 2)
        stride = budget - overlap
        starts = [*range(0, len(spans) - budget, stride), len(spans) - budget]
        return [(spans[s][0], spans[s + budget - 1][1]) for s in starts[: self.max_windows]]

    # ------------------------------------------------------------------ scoring
    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One score per passage (best window for long passages), batched through the model."""
        if isinstance(passages, str):
            raise InputError("score(query, passages): passages must be a sequence of strings, not one string")
        if not passages:
            return []
        return self.score_many([(query, passages)])[0]

    def score_many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """:meth:`score` for several (query, passages) at once: ONE model pass over all their pairs (the
        HTTP service batches concurrent requests' reranks this way); each request gets its own scores."""
        self.warm_up()
        with self._lock:
            pairs: list[tuple[str, str]] = []
            owner: list[tuple[int, int]] = []
            for r, (query, passages) in enumerate(requests):
                fitted, q_tokens = self._fit_query(str(query))
                for index, passage in enumerate(passages):
                    text = str(passage)
                    for start, end in self._window_spans(q_tokens, text):
                        pairs.append((fitted, text[start:end]))
                        owner.append((r, index))
            logits = (
                self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
                if pairs
                else None
            )
        best = [[-math.inf] * len(passages) for _, passages in requests]
        if logits is not None:
            for (r, index), value in zip(owner, logits.reshape(len(pairs), -1)[:, 0].tolist(), strict=True):
                best[r][index] = max(best[r][index], float(value))
        return [[self._activate(v) for v in row] for row in best]

    def _activate(self, logit: float) -> float:
        if self.activation == "identity":
            return logit
        if logit >= 0:
            return 1.0 / (1.0 + math.exp(-logit))
        e = math.exp(logit)
        return e / (1.0 + e)

    def rerank(
        self, query: str, items: list[T], text_of: Callable[[T], str], top_n: int
    ) -> list[tuple[T, float]]:
        """Score the first ``top_n`` items and sort them by score (stable); the tail follows unscored.

        Tail items keep their input order and carry :data:`NO_SCORE` (``-inf``): they were not scored.
        """
        if top_n < 1:
            raise ConfigError(f"rerank.top_n must be >= 1, got {top_n}")
        head, tail = items[:top_n], items[top_n:]
        scores = self.score(query, [text_of(item) for item in head])
        order = sorted(range(len(head)), key=lambda i: -scores[i])
        return [(head[i], scores[i]) for i in order] + [(item, NO_SCORE) for item in tail]

    def __repr__(self) -> str:
        return f"CrossEncoderReranker({self.name!r}, device={self.device!r}, max_length={self.max_length})"


def load_reranker(spec: str | None, **options: Any) -> Reranker | None:
    """``None`` / ``"none"`` / ``""`` -> no reranking; otherwise a :class:`CrossEncoderReranker`.

    ``spec`` is a cross-encoder id (e.g. ``BAAI/bge-reranker-v2-m3``) or a local folder; ``options``
    go to the constructor (device, batch_size, max_length, ...). Weights load on first use/warm_up.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise ConfigError(
            f"rerank.model must be a string (model id, folder or 'none'), got {type(spec).__name__}"
        )
    if spec.strip().lower() in ("", "none"):
        return None
    return CrossEncoderReranker(spec.strip(), **options)
