"""An :class:`~cjkrag.ingest.embedding.protocol.Embedder` over any sentence-transformers model.

The constructor is light (nothing imported, nothing loaded); :meth:`SentenceTransformerEmbedder.warm_up`
imports torch/sentence-transformers and loads the model. On CUDA the weights run in half precision (the
profile's ``cuda_dtype``), elsewhere in float32. Texts are embedded in length-sorted batches (longest
first, so padding is small and an out-of-memory shows up on the first batch) and returned in input order,
always as L2-normalized float32. One lock serializes use of the model, so concurrent callers are safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cjkrag.errors import ConfigError, MissingDependency, ModelError, missing
from cjkrag.ingest.embedding.profiles import ModelProfile, profile_for

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve_device(device: str, *, key: str = "embedding.device") -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; an unavailable explicit device is a ConfigError
    naming ``key`` (the embedder's and the reranker's config keys share this rule)."""
    import torch

    d = (device or "auto").strip().lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cpu":
        return "cpu"
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key} is {device!r} but no CUDA device is available; use auto or cpu")
        return d
    if d == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{key} is 'mps' but MPS is not available; use auto or cpu")
        return d
    raise ConfigError(f"{key}: unknown device {device!r}; use auto, cpu, cuda (or cuda:N) or mps")


def resolve_prefix(prompts: dict[str, str], prompt_name: str | None, fallback: str) -> str:
    """The text to put before inputs: the model's own prompt ``prompt_name`` when it defines a non-empty one
    (or when the profile has no literal prefix), else the profile's literal ``fallback`` prefix."""
    found = prompts.get(prompt_name) if prompt_name else None
    if isinstance(found, str) and (found or not fallback):
        return found
    return fallback


PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def _quiet_transformers() -> None:
    """No per-load "Loading weights" bars on a CLI's stdout; our own logs say what was loaded."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - transformers missing or changed: cosmetic only
        pass


def _cpu_has_bf16(torch: Any) -> bool:
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # pragma: no cover - probe missing on this build
            continue
    return False


def _choose_precision(torch: Any, device: str, request: str, cuda_dtype: str | None) -> str:
    """auto: CUDA -> the profile's half type (fp16 unless the model needs bf16); CPU with bf16 units (AVX512-BF16
    or AMX) -> "measure" (bf16 autocast was 1.8x faster than fp32 on one CPU and slower on another, so
    warm_up times both and keeps the faster); else fp32. An explicit bf16 on such a CPU is honoured."""
    if device.startswith("cuda"):
        if request == "auto":
            return "bf16" if cuda_dtype == "bfloat16" else ("fp16" if cuda_dtype else "fp32")
        return request
    if request in ("auto", "bf16") and _cpu_has_bf16(torch):
        return "measure" if request == "auto" else "bf16-autocast"
    return "fp32"  # fp16 matmuls on CPU are slow and lossy: keep fp32


#: bf16 autocast must beat fp32 by this factor to be kept (noise must never make auto slower than fp32)
BF16_MARGIN = 1.10
_QUERY_PROBE = "如何申请退款？"
_PROBE = "退货政策：商品签收后三十日内可申请退款，请保留发票。パスワードを再設定してください。비밀번호를 잊어버린 경우 "


def pick_cpu_precision(timings: dict[str, float]) -> str:
    """The faster of fp32 and bf16 autocast by measured seconds; fp32 unless bf16 wins by BF16_MARGIN."""
    fp32, bf16 = timings.get("fp32"), timings.get("bf16-autocast")
    if fp32 is None or bf16 is None or bf16 * BF16_MARGIN > fp32:
        return "fp32"
    return "bf16-autocast"


def measure_cpu_precision(
    model: Any, prefix: str, *, passages: int = 8, reps: int = 2, texts: list[str] | None = None
) -> dict[str, float]:
    """Seconds per batch of ``passages`` ~200-token CJK passages (or of ``texts``), fp32 vs bf16 autocast
    (best of ``reps``, after one untimed warm-up run each): the choice is made on this machine, not by CPU
    flags."""
    import time

    import torch

    texts = texts if texts is not None else [(_PROBE * 4)[i:] for i in range(passages)]
    passages = len(texts)
    out: dict[str, float] = {}
    for name in ("fp32", "bf16-autocast"):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if name != "fp32" else contextlib.nullcontext
        best = float("inf")
        for rep in range(reps + 1):
            t0 = time.perf_counter()
            with torch.inference_mode(), ctx():
                model.encode(texts, prompt=prefix, batch_size=passages, show_progress_bar=False,
                             convert_to_tensor=True)  # fmt: skip
            if rep:
                best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


class SentenceTransformerEmbedder:
    """Embedder backed by ``sentence_transformers.SentenceTransformer`` (a model id or a local folder)."""

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 32,
        profile: ModelProfile | None = None,
        cache_dir: Path | None = None,
        *,
        name: str | None = None,
        precision: str = "auto",
    ) -> None:
        if not model or not model.strip():
            raise ConfigError(
                "embedding.model is empty; set a model id, a local folder or bundled:multilingual-e5-small"
            )
        if batch_size < 1:
            raise ConfigError(f"embedding.batch_size must be >= 1, got {batch_size}")
        if precision not in PRECISIONS:
            raise ConfigError(
                f"embedding.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        self.precision_request = precision
        #: what runs: "fp16"/"bf16" weights on CUDA, "bf16-autocast" on CPUs with bf16 units, else "fp32"
        self.precision = "fp32"
        #: seconds per probe batch per precision, when "auto" measured them at warm-up (CPUs with bf16 units)
        self.precision_timings: dict[str, float] = {}
        #: what runs for queries (one short text per call): measured separately by "auto", else ``precision``
        self.query_precision = "fp32"
        self.query_precision_timings: dict[str, float] = {}
        #: CPU threads torch uses for query embeddings (None: torch's default, as for passages); the engine
        #: sets ``embedding.query_threads`` here (see cjkrag/__init__.py for the measurement)
        self.query_threads: int | None = None
        #: run query embeddings through a verified TorchScript trace on the CPU (``traced.py``); the engine
        #: sets ``embedding.trace_queries`` here; built by :meth:`warm_up_queries`
        self.trace_queries = True
        self._traced: Any = None
        self._traced_tried = False
        self.model_ref = model
        self.name = name or model
        self.device_request = device
        self.batch_size = batch_size
        self.profile = profile if profile is not None else profile_for(model)
        self.cache_dir = cache_dir
        #: the profile's cap until warm_up() learns the model's own limit
        self.max_tokens: int = self.profile.max_tokens
        self.device: str | None = None
        self.query_prefix = self.profile.query_prefix
        self.passage_prefix = self.profile.passage_prefix
        self._model: Any = None
        self._tokenizer: Any = None
        # a private copy of the Rust tokenizer, built on first count/offsets call (so query-only use does not
        # pay for it): it has no truncation/padding state, so counting needs no lock and never waits on encode
        self._counter: Any = None
        self._counter_lock = threading.Lock()
        self._lower = False
        self._dim: int | None = None
        self._lock = threading.RLock()

    # -- loading --------------------------------------------------------------------------------
    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise missing("gpu", exc.name or "sentence-transformers") from exc
            _quiet_transformers()
            device = resolve_device(self.device_request)
            model = self._load(SentenceTransformer, device)
            self.precision = _choose_precision(torch, device, self.precision_request, self.profile.cuda_dtype)
            if self.precision == "measure":
                model.eval()
                prefix = resolve_prefix(dict(getattr(model, "prompts", None) or {}),
                                        self.profile.passage_prompt_name, self.profile.passage_prefix)  # fmt: skip
                self.precision_timings = measure_cpu_precision(model, prefix)
                self.precision = pick_cpu_precision(self.precision_timings)
                # a query is one short text, not a batch of long ones: the faster precision can differ,
                # so it is timed on its own (autocast is chosen per call; the weights stay fp32)
                qprefix = resolve_prefix(dict(getattr(model, "prompts", None) or {}),
                                         self.profile.query_prompt_name, self.profile.query_prefix)  # fmt: skip
                with self._threads(self.query_threads):  # timed as queries will run
                    self.query_precision_timings = measure_cpu_precision(model, qprefix, reps=4, texts=[_QUERY_PROBE])
                self.query_precision = pick_cpu_precision(self.query_precision_timings)
                log.info("embedding precision measured on this CPU (s/batch): passages %s -> %s, queries %s -> %s",
                         {k: round(v, 4) for k, v in self.precision_timings.items()}, self.precision,
                         {k: round(v, 4) for k, v in self.query_precision_timings.items()},
                         self.query_precision)  # fmt: skip
            else:
                self.query_precision = self.precision
            if self.precision in ("fp16", "bf16"):
                model = model.to(torch.float16 if self.precision == "fp16" else torch.bfloat16)
            model.eval()
            first = model[0] if len(model) else None
            self._lower = bool(getattr(first, "do_lower_case", False))
            self._tokenizer = model.tokenizer
            prompts = dict(getattr(model, "prompts", None) or {})
            self.query_prefix = resolve_prefix(
                prompts, self.profile.query_prompt_name, self.profile.query_prefix
            )
            self.passage_prefix = resolve_prefix(
                prompts, self.profile.passage_prompt_name, self.profile.passage_prefix
            )
            limit = getattr(model, "max_seq_length", None)
            self.max_tokens = min(int(limit), self.profile.max_tokens) if limit else self.profile.max_tokens
            get_dim = (
                getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            )
            dim = get_dim() or model.encode(["a"], prompt="", convert_to_numpy=True).shape[-1]
            self._dim = int(dim)
            self.device = device
            self._model = model  # last: a loaded model means everything above is set
            log.info(
                "embedding model %s on %s, %s (dim %d, max %d tokens)",
                self.name,
                device,
                self.precision,
                self._dim,
                self.max_tokens,
            )

    def _load(self, cls: Any, device: str) -> Any:
        ref = self.model_ref
        local = Path(ref).expanduser()
        looks_local = ref.startswith((".", "/", "~")) or "\\" in ref or local.exists()
        if looks_local and not local.is_dir():
            raise ModelError(
                f"embedding model folder {ref!r} does not exist; fix embedding.model (a folder or a model id)"
            )
        offline = _offline()
        kwargs: dict[str, Any] = {"device": device, "trust_remote_code": self.profile.trust_remote_code}
        if offline:
            kwargs["local_files_only"] = True
        if self.cache_dir is not None:
            kwargs["cache_folder"] = str(self.cache_dir)
        try:
            return cls(str(local) if looks_local else ref, **kwargs)
        except (MissingDependency, ModelError, ConfigError):
            raise
        except Exception as exc:
            if looks_local:
                fix = "check that the folder is a complete sentence-transformers / Hugging Face model"
            elif offline:
                fix = (
                    "HF_HUB_OFFLINE is set, so only the local Hugging Face cache is used: download it once with "
                    f"network (`huggingface-cli download {ref}`), or point embedding.model to a local folder"
                )
            else:
                fix = "check the model id, the network, or point embedding.model to a local folder"
            raise ModelError(
                f"cannot load embedding model {ref!r} ({type(exc).__name__}: {exc}); {fix}"
            ) from exc

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it on first access); use under your own care."""
        if self._model is None:
            self.warm_up()
        return self._model

    # -- protocol -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        if self._model is None:
            self.warm_up()
        assert self._dim is not None
        return self._dim

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        return self._embed(texts, self.passage_prefix, self.precision)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        return self._embed(texts, self.query_prefix, self.query_precision, self.query_threads, self._traced)

    def warm_up_queries(self) -> bool:
        """Build the traced query path (CPU, ``trace_queries``) now; True when queries run traced. Long-lived
        users (the HTTP service, ``Engine.warm_up``) call it once; it is never built on a first query."""
        self.warm_up()
        with self._lock:
            if not self._traced_tried and self.trace_queries and (self.device or "cpu") == "cpu":
                self._traced_tried = True
                from cjkrag.ingest.embedding.traced import trace_queries

                with self._threads(self.query_threads):
                    self._traced = trace_queries(self._model, self.query_prefix, self.query_precision,
                                                 self._lower, self.max_tokens)  # fmt: skip
            return self._traced is not None

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text`` as a passage (prefix and specials included), untruncated."""
        counter = self._private_tokenizer()
        full = self.passage_prefix + text
        if self._lower:
            full = full.lower()
        if counter is not None:
            return len(counter.encode(full, add_special_tokens=True).ids)
        with self._lock:  # a slow transformers tokenizer: keep it away from concurrent encode calls
            return len(
                self._tokenizer(full, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
            )

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character spans of ``text``'s tokens (raw text: no prefix, no special tokens).

        Spans are in order; a stand-alone ``▁`` (SentencePiece word start) may share the span of the
        character that follows it.
        """
        counter = self._private_tokenizer()
        if counter is None:
            raise ModelError(
                f"{self.name}: token offsets need a fast (Rust) tokenizer; this model ships only a slow one"
            )
        return [(int(a), int(b)) for a, b in counter.encode(text, add_special_tokens=False).offsets]

    # -- internals ------------------------------------------------------------------------------
    def _private_tokenizer(self) -> Any:
        """The private Rust tokenizer (None for a slow-only tokenizer); loads the model first if needed."""
        if self._model is None:
            self.warm_up()
        if self._counter is None and getattr(self._tokenizer, "is_fast", False):
            with self._counter_lock:
                if self._counter is None:
                    from tokenizers import Tokenizer

                    with self._lock:  # the shared backend is mutated by concurrent encode calls
                        spec = self._tokenizer.backend_tokenizer.to_str()
                    private = Tokenizer.from_str(spec)
                    private.no_truncation()
                    private.no_padding()
                    self._counter = private
        return self._counter

    def _embed(
        self, texts: Sequence[str], prefix: str, precision: str, threads: int | None = None, traced: Any = None
    ) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of strings, not a single string")
        items = list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        # longest first: padding stays small per batch, and the largest batch runs (and fails) first
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        out = np.empty((len(items), self.dim), dtype=np.float32)
        batch = self.batch_size
        pos = 0
        with self._lock, self._threads(threads):
            while pos < len(order):
                idx = order[pos : pos + batch]
                try:
                    batch_texts = [items[i] for i in idx]
                    vecs = traced.encode(batch_texts, prefix) if traced is not None else self._encode(
                        batch_texts, prefix, precision
                    )
                except RuntimeError as exc:
                    if "out of memory" not in str(exc).lower() or batch == 1:
                        raise ModelError(f"{self.name}: embedding failed on {self.device} ({exc})") from exc
                    batch = max(1, batch // 2)
                    log.warning(
                        "%s: out of memory on %s, retrying with batch size %d", self.name, self.device, batch
                    )
                    self._empty_cache()
                    continue
                out[idx] = vecs
                pos += len(idx)
        if self.profile.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out

    @contextlib.contextmanager
    def _threads(self, threads: int | None) -> Iterator[None]:
        """torch's intra-op threads set to ``threads`` for one call on the CPU (under the model lock), then back."""
        if not threads or (self.device or "cpu") != "cpu":  # None: during warm-up's CPU-only probes
            yield
            return
        import torch

        before = torch.get_num_threads()
        if before != threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if before != threads:
                torch.set_num_threads(before)

    def _encode(self, texts: list[str], prefix: str, precision: str) -> np.ndarray:
        import torch

        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if precision == "bf16-autocast"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            vecs = self._model.encode(
                texts,
                prompt=prefix,  # always a string: "" disables a model's default prompt, we decide prefixes
                batch_size=len(texts),
                show_progress_bar=False,
                convert_to_numpy=False,
                convert_to_tensor=True,
                normalize_embeddings=False,
            )
        return np.asarray(vecs.detach().to(torch.float32).cpu().numpy(), dtype=np.float32)

    def _empty_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.name!r}, device={self.device or self.device_request!r}, profile={self.profile.name!r})"
