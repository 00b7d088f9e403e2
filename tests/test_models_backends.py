"""Optimized CPU builds (ONNX Runtime, OpenVINO): same vectors as torch, and never used without a passed gate.

A tiny real BERT (2 layers, hidden 32, the bundled model's tokenizer, random weights) is exported by the
same code path as ``cjkrag models optimize``; its vectors are compared with sentence-transformers' own, and
``embedding.backend`` is refused for every way a build can be ungated (no report, failed, other runtime,
other weights) and accepted after a real gate run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sentence_transformers")

from cjkrag.errors import ConfigError
from cjkrag.ingest.embedding.loader import load_embedder
from cjkrag.pipeline.evaluation import BeirDoc, BeirSet

TEXTS = ["北京是中国的首都。", "東京は日本の首都です。", "서울은 한국의 수도입니다.", "密码重置 password reset",
         "熊猫主要吃竹子，每天要吃十几个小时。" * 8]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from cjkrag.ingest.embedding.bundled import ensure_bundled_model

    root = tmp_path_factory.mktemp("tiny")
    hf = root / "hf"
    tok = AutoTokenizer.from_pretrained(str(ensure_bundled_model()))
    torch.manual_seed(7)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    BertModel(cfg).save_pretrained(str(hf))
    tok.save_pretrained(str(hf))
    st = SentenceTransformer(modules=[models.Transformer(str(hf), max_seq_length=128),
                                      models.Pooling(32, "mean"), models.Normalize()], device="cpu")
    st.prompts = {"query": "query: ", "passage": "passage: "}
    st.save(str(root / "st"))
    return root / "st"


@pytest.fixture(scope="module")
def onnx_build(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cjkrag.pipeline.models.optimize import export_onnx

    out = tmp_path_factory.mktemp("build") / "onnx"
    export_onnx(str(tiny_model), out)
    return out


def _torch_vectors(model: Path) -> np.ndarray:
    emb = load_embedder(str(model), device="cpu", precision="fp32")
    emb.warm_up()
    return np.asarray(emb.embed_passages(TEXTS))


@pytest.mark.parametrize(("backend", "precision", "floor"), [("onnx", "auto", 0.99999), ("openvino", "fp32", 0.99999),
                                                            ("openvino", "auto", 0.99)])
def test_backend_vectors_match_torch(tiny_model: Path, onnx_build: Path, backend: str, precision: str,
                                     floor: float) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    from cjkrag.pipeline.models.optimize import BackendEmbedder

    ref = _torch_vectors(tiny_model)
    emb = BackendEmbedder(str(onnx_build), backend=backend, precision=precision)
    got = emb.embed_passages(TEXTS)
    assert got.shape == ref.shape
    cos = (got * ref).sum(axis=1)
    assert cos.min() >= floor, cos
    assert emb.count_tokens(TEXTS[0]) == load_embedder(str(tiny_model), device="cpu").count_tokens(TEXTS[0])


def _tiny_set() -> BeirSet:
    docs = {f"d{i}": BeirDoc(f"d{i}", "", t) for i, t in enumerate(TEXTS)}
    queries = {f"q{i}": t[:6] for i, t in enumerate(TEXTS)}
    return BeirSet("tiny", docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(len(TEXTS))})


def _copy(build: Path, dest: Path) -> Path:
    shutil.copytree(build, dest)
    return dest


def test_loader_refuses_every_ungated_build(tiny_model: Path, onnx_build: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cjkrag-optimized\.json"):
        load_embedder(str(tiny_model), backend="onnx")
    build = _copy(onnx_build, tmp_path / "b")
    (build / "gate.json").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="no readable gate report"):
        load_embedder(str(build), backend="onnx")
    from cjkrag.pipeline.models.gate import model_key

    good: dict[str, Any] = {"passed": True, "candidate_key": model_key(str(build)), "candidate_backend": "onnx",
                            "sets": []}
    (build / "gate.json").write_text(json.dumps({**good, "passed": False}))
    with pytest.raises(ConfigError, match="FAILED its quality gate"):
        load_embedder(str(build), backend="onnx")
    (build / "gate.json").write_text(json.dumps(good))
    with pytest.raises(ConfigError, match="ran on onnx, not openvino"):
        load_embedder(str(build), backend="openvino")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        load_embedder(str(build), backend="onnx", device="cuda")
    with pytest.raises(ConfigError, match=r"bf16 needs embedding\.backend openvino"):
        load_embedder(str(build), backend="onnx", precision="bf16")
    assert load_embedder(str(build), backend="onnx").dim == 32  # accepted as is
    with (build / "onnx" / "model.onnx").open("ab") as h:  # the weights change after the gate
        h.write(b"\0")
    with pytest.raises(ConfigError, match="other weights"):
        load_embedder(str(build), backend="onnx")


def test_real_gate_then_engine_uses_the_build(tiny_model: Path, onnx_build: Path, tmp_path: Path) -> None:
    from cjkrag.config import load_config
    from cjkrag.engine import Engine
    from cjkrag.pipeline.models.gate import run_gate, write_gate

    build = _copy(onnx_build, tmp_path / "b")
    report = run_gate(str(build), [_tiny_set()], base=str(tiny_model), kind="embedder", device="cpu",
                      candidate_backend="onnx", cache_dir=tmp_path / "cache")
    assert report["passed"] and report["candidate_backend"] == "onnx"
    write_gate(report, build / "gate.json")
    small = {"max_tokens": 96, "overlap_tokens": 16}  # the tiny model reads 128 tokens
    cfg = load_config({"embedding": {"model": str(build), "backend": "onnx"}, "chunking": small,
                       "data_dir": str(tmp_path / "data")})
    engine = Engine(cfg)
    emb = engine.embedder
    assert type(emb).__name__ == "BackendEmbedder" and emb.name.endswith("|onnx")
    ref = _torch_vectors(tiny_model)
    assert float((emb.embed_passages(TEXTS) * ref).sum(axis=1).min()) >= 0.99999
    docs = [{"id": "d1", "text": TEXTS[0], "public": True}]
    assert engine.ingest(docs).documents == 1
    onnx_versions = {e.versions.model for e in engine.manifest.iter_all()}
    engine.close()
    assert onnx_versions == {f"{build}|auto|onnx"}
    torch_engine = Engine(load_config({"embedding": {"model": str(build)}, "chunking": small,
                                       "data_dir": str(tmp_path / "data")}))
    try:  # the same folder on torch is another runtime: its vectors are re-embedded, never mixed
        report = torch_engine.ingest(docs)
        assert report.documents == 1 and report.reused == 0, report.failures
    finally:
        torch_engine.close()
