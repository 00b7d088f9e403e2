"""A faster CPU build of an embedder: ONNX export (+ dynamic int8 quantization) run by ONNX Runtime or OpenVINO.

sentence-transformers' own ONNX backend (``SentenceTransformer(..., backend="onnx")``) goes through
``optimum-onnx``, which pins ``transformers<4.58`` while sentence-transformers 6 needs ``transformers>=5``;
so the export here is ``torch.onnx.export`` of the model's transformer (TorchScript exporter) and the
quantization is ONNX Runtime's ``quantize_dynamic`` (int8 weights, per channel). Pooling (mean or CLS, as
the model's sentence-transformers config says) and L2 normalization run in numpy.

The output folder is the sentence-transformers folder (tokenizer, prompts, pooling config) plus
``onnx/model.onnx`` (and ``onnx/model_qint8.onnx``); :class:`BackendEmbedder` implements the
:class:`~cjkrag.ingest.embedding.protocol.Embedder` protocol over it, running the ONNX file with ONNX Runtime
(``backend="onnx"``) or OpenVINO (``backend="openvino"``, which reads ONNX natively: no ``optimum-intel``).
OpenVINO's CPU plugin computes in bf16 where the CPU has bf16 instructions (its default
``INFERENCE_PRECISION_HINT``); ``precision="fp32"`` forces f32. Extra ``optimize``: onnx, onnxruntime, openvino.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cjkrag.errors import InputError, ModelError, missing

ONNX_FILE = "onnx/model.onnx"
INT8_FILE = "onnx/model_qint8.onnx"
BACKENDS = ("onnx", "openvino")


def export_onnx(base: str, out: Path | str, *, quantize: str | None = None, opset: int = 17,
                backend: str = "onnx") -> Path:
    """Export ``base`` (a model id, folder or ``bundled:...``) to ``out``; returns the ONNX file to run."""
    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if quantize not in (None, "int8"):
        raise InputError(f"--quantize must be int8 (or omitted), got {quantize!r}")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise missing("gpu", exc.name or "sentence-transformers") from exc
    from cjkrag.pipeline.models.finetune import prefixes, resolve_base

    source, profile = resolve_base(base)
    out = Path(out)
    st = SentenceTransformer(source, device="cpu")
    q_prefix, p_prefix = prefixes(st, profile)
    st.prompts = {**dict(st.prompts or {}), "query": q_prefix, "passage": p_prefix, "document": p_prefix}
    st.save(str(out))
    hf: Any = st[0].auto_model
    hf.eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in
                                                  st.tokenizer.model_input_names else [])

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, *args: Any) -> Any:
            return self.hf(**dict(zip(names, args, strict=True))).last_hidden_state

    sample = st.tokenizer(["query: 示例文本", "passage: 例"], padding=True, return_tensors="pt")
    target = out / ONNX_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["hidden"] = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(Wrapper(), tuple(sample[n] for n in names), str(target), input_names=names,
                          output_names=["hidden"], dynamic_axes=axes, opset_version=opset, dynamo=False)
    if quantize == "int8":
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError as exc:
            raise missing("optimize", "onnxruntime") from exc
        quantize_dynamic(str(target), str(out / INT8_FILE), weight_type=QuantType.QInt8, per_channel=True)
        target = out / INT8_FILE
    (out / "cjkrag-optimized.json").write_text(json.dumps(
        {"base": base, "backend": backend, "quantize": quantize, "file": str(target.relative_to(out))}, indent=2) + "\n",
        encoding="utf-8")
    return target


class BackendEmbedder:
    """An Embedder over an exported ONNX folder, run on the CPU by ONNX Runtime or OpenVINO (thread-safe)."""

    def __init__(self, folder: str, *, backend: str = "onnx", batch_size: int = 32, profile: str = "auto",
                 file: str | None = None, threads: int | None = None, precision: str = "auto") -> None:
        if backend not in BACKENDS:
            raise InputError(f"embedding.backend {backend!r}: an optimized build runs on {' or '.join(BACKENDS)}")
        if precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"embedding.precision {precision!r}: an {backend} build takes auto, fp32 or bf16")
        if backend == "onnx" and precision == "bf16":
            raise InputError("embedding.precision bf16 needs embedding.backend openvino (ONNX Runtime runs fp32)")
        self.backend = backend
        self.precision = precision
        self.folder = Path(folder).expanduser()
        meta = self.folder / "cjkrag-optimized.json"
        if not meta.is_file():
            raise ModelError(f"{folder}: not an optimized build (no cjkrag-optimized.json); run `cjkrag models optimize`")
        self.file = self.folder / (file or json.loads(meta.read_text(encoding="utf-8"))["file"])
        self.name = f"{self.folder}|{backend}" + ("" if precision == "auto" else f"|{precision}")
        self.batch_size = batch_size
        self.threads = threads
        self.max_tokens = 512
        self.query_prefix = self.passage_prefix = ""
        self._session: Any = None
        self._tok: Any = None
        self._pool = "mean"
        self._dim = 0
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            self._session, self._inputs = self._open()
            st_cfg = json.loads((self.folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
            prompts = st_cfg.get("prompts") or {}
            self.query_prefix, self.passage_prefix = prompts.get("query", ""), prompts.get("passage", "")
            pool_cfg = next(self.folder.glob("1_Pooling/config.json"), None)
            if pool_cfg is not None and json.loads(pool_cfg.read_text()).get("pooling_mode_cls_token"):
                self._pool = "cls"
            seq = json.loads((self.folder / "sentence_bert_config.json").read_text()).get("max_seq_length", 512)
            self.max_tokens = int(seq)
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            tok.enable_truncation(self.max_tokens)
            tok.enable_padding(pad_id=tok.token_to_id("<pad>") or 0)
            self._tok = tok
            self._dim = int(self._run(["a"]).shape[1])

    def _open(self) -> tuple[Any, list[str]]:
        """(a callable feed -> hidden states, its input names) for the configured runtime."""
        if self.backend == "openvino":
            try:
                import openvino as ov
            except ImportError as exc:
                raise missing("optimize", exc.name or "openvino") from exc
            config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = self.threads
            if self.precision != "auto":
                config["INFERENCE_PRECISION_HINT"] = "f32" if self.precision == "fp32" else "bf16"
            try:
                compiled = ov.Core().compile_model(str(self.file), "CPU", config)
            except RuntimeError as exc:
                raise ModelError(f"{self.file}: OpenVINO could not compile it ({exc}); re-run `cjkrag models "
                                 "optimize`") from None
            names = [p.get_any_name() for p in compiled.inputs]
            lock = threading.Lock()  # one infer request, used by one thread at a time

            def run_ov(feed: dict[str, np.ndarray]) -> np.ndarray:
                with lock:
                    return np.asarray(compiled(feed)[0])
            return run_ov, names
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing("optimize", exc.name or "onnxruntime") from exc
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
        session = ort.InferenceSession(str(self.file), opts, providers=["CPUExecutionProvider"])

        def run_ort(feed: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(session.run(None, feed)[0])
        return run_ort, [i.name for i in session.get_inputs()]

    @property
    def dim(self) -> int:
        self.warm_up()
        return self._dim

    def _run(self, texts: list[str]) -> np.ndarray:
        enc = self._tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session({k: feed[k] for k in self._inputs})
        if self._pool == "cls":
            vec = hidden[:, 0]
        else:
            m = mask[..., None].astype(np.float32)
            vec = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        vec = vec.astype(np.float32)
        return vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        self.warm_up()
        items = [prefix + t for t in texts]
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        out = np.empty((len(items), self._dim), dtype=np.float32)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            out[idx] = self._run([items[i] for i in idx])
        return out

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.passage_prefix)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.query_prefix)

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._tok.encode(self.passage_prefix + text).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        self.warm_up()
        enc = self._tok.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in enc.offsets]


def throughput(embedder: Any, passages: Sequence[str], queries: Sequence[str]) -> dict[str, float]:
    """chunks/s embedding ``passages`` in batches, and p50 / p95 latency (ms) of one query at a time."""
    embedder.warm_up()
    embedder.embed_queries(list(queries[:2]))  # first-call costs out of the timing
    t0 = time.perf_counter()
    embedder.embed_passages(list(passages))
    rate = len(passages) / (time.perf_counter() - t0)
    lat = []
    for q in queries:
        t = time.perf_counter()
        embedder.embed_queries([q])
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {"chunks_per_s": round(rate, 1), "query_p50_ms": round(statistics.median(lat), 1),
            "query_p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1), "threads": os.cpu_count() or 0}
