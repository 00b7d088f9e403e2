"""Query embeddings through a TorchScript trace of the model's transformer: one C++ call per batch, run
without Python's GIL.

Why (measured, ``README.md`` "Query speed"): an eager forward pass of e5-small is ~300 small torch ops, and
torch takes the GIL back after every one. In the HTTP service the request threads' Python work (HTTP,
fusion, store results) holds the GIL, so each op waits for it: with one busy Python thread beside it a
batch of 8 queries took 1,207 ms instead of 86 ms here; traced, 81 ms instead of 64. A trace made under the
query precision's autocast keeps its casts (bf16 autocast: same vectors as eager bf16, to the last bit
measured), so it is as fast as eager when alone.

Safe by construction: :func:`trace_queries` compares the traced path with the model's own ``encode`` on
probe batches of other sizes and lengths than the one traced, and returns None (eager stays) when any
vector differs by more than float rounding, or when tracing fails for this architecture. CPU only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger("cjkrag.embedding")

#: the traced path is used only if every probe vector has cosine >= this to the eager model's
MIN_COSINE = 0.99999
_TRACE_TEXTS = ["例子", "A longer example sentence, 用来追踪 the graph"]
_PROBES = [
    ["北京是中华人民共和国的首都吗？", "東京の人口は何人ですか、そして面積はどれくらいですか", "서울", "API rate limit"],
    ["検索"],
]


class TracedQueries:
    """``encode(texts, prefix) -> float32 array`` (not normalized) through the traced transformer, then the
    model's own remaining modules (pooling, normalization)."""

    def __init__(self, model: Any, graph: Any, autocast: bool, lower: bool, max_tokens: int) -> None:
        self.model = model
        self.graph = graph
        self.autocast = autocast
        self.lower = lower
        self.max_tokens = max_tokens
        self.tail = list(model)[1:]

    def features(self, texts: list[str], prefix: str) -> dict[str, Any]:
        full = [prefix + t for t in texts]
        if self.lower:
            full = [t.lower() for t in full]
        encoded = self.model.tokenizer(
            full, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return dict(encoded)

    def encode(self, texts: list[str], prefix: str) -> np.ndarray:
        import torch

        feats = self.features(texts, prefix)
        with torch.inference_mode():
            out = self.graph(**feats)
            hidden = out[0] if isinstance(out, (tuple, list)) else out["last_hidden_state"]
            state: dict[str, Any] = {"token_embeddings": hidden.float(), "attention_mask": feats["attention_mask"]}
            for module in self.tail:
                state = module(state)
            vecs = state["sentence_embedding"]
        return np.asarray(vecs.detach().to(torch.float32).cpu().numpy(), dtype=np.float32)


def trace_queries(model: Any, prefix: str, precision: str, lower: bool, max_tokens: int) -> TracedQueries | None:
    """The traced query path for ``model`` (a loaded SentenceTransformer on the CPU), verified against its
    eager ``encode`` at ``precision``; None when it cannot be traced or does not give the same vectors."""
    import torch

    first = model[0] if len(model) else None
    hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if hf is None or not isinstance(hf, torch.nn.Module) or getattr(model, "tokenizer", None) is None:
        log.info("query embeddings stay eager: the model's first module has no transformer to trace")
        return None
    autocast = precision == "bf16-autocast"

    def cast() -> Any:
        return torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    started = time.perf_counter()
    shell = TracedQueries(model, None, autocast, lower, max_tokens)
    try:
        example = shell.features(_TRACE_TEXTS, prefix)
        with torch.inference_mode(), cast(), _quiet_tracer():
            shell.graph = torch.jit.trace(hf, example_kwarg_inputs=example, strict=False, check_trace=False)
        worst = 1.0
        for probe in _PROBES:
            with torch.inference_mode(), cast():
                eager = model.encode(probe, prompt=prefix, batch_size=len(probe), convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
            traced = shell.encode(probe, prefix)
            traced /= np.maximum(np.linalg.norm(traced, axis=1, keepdims=True), 1e-12)
            worst = min(worst, float((traced * np.asarray(eager, dtype=np.float32)).sum(axis=1).min()))
    except Exception as exc:  # an architecture the tracer cannot follow: eager is always correct
        log.info("query embeddings stay eager: tracing failed (%s: %s)", type(exc).__name__, exc)
        return None
    if worst < MIN_COSINE:
        log.warning("query embeddings stay eager: the traced model differs from the eager one (cosine %.6f)", worst)
        return None
    log.info("query embeddings traced (%s, verified: cosine >= %.6f to eager) in %.1f s", precision, worst,
             time.perf_counter() - started)  # fmt: skip
    return shell


@contextlib.contextmanager
def _quiet_tracer() -> Any:
    """TracerWarnings about shape arithmetic the encoder never branches on (verified by the probes)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield
