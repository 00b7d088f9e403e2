"""FakeEmbedder: deterministic hashed character n-grams, same protocol as the real embedders."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cjkrag.errors import ConfigError
from cjkrag.ingest.embedding.fake import FakeEmbedder
from cjkrag.ingest.embedding.loader import load_embedder
from cjkrag.ingest.embedding.protocol import Embedder


def test_protocol_shapes_and_normalization() -> None:
    emb = FakeEmbedder(dim=32)
    emb.warm_up()
    assert isinstance(emb, Embedder)
    assert (emb.name, emb.dim, emb.max_tokens) == ("fake:32", 32, 512)
    out = emb.embed_passages(["北京", "東京タワー", "", "서울"])
    assert out.shape == (4, 32) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert emb.embed_queries([]).shape == (0, 32)
    with pytest.raises(TypeError):
        emb.embed_passages("not a list")


def test_deterministic_across_instances_and_processes() -> None:
    texts = ["混合检索", "形態素解析", "한국어 검색", "hybrid search"]
    a = FakeEmbedder(48).embed_passages(texts)
    assert np.array_equal(a, FakeEmbedder(48).embed_passages(texts))
    code = (
        "import sys, numpy as np\n"
        "from cjkrag.ingest.embedding.fake import FakeEmbedder\n"
        f"np.save(sys.stdout.buffer, FakeEmbedder(48).embed_passages({texts!r}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str hashes differ; the fake must not use them
    raw = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, env=env, timeout=60
    ).stdout
    import io

    assert np.array_equal(np.load(io.BytesIO(raw)), a)


def test_similar_texts_are_closer() -> None:
    emb = FakeEmbedder(256)
    q, near, far = (
        emb.embed_queries(["东京的天气"])[0],
        *emb.embed_passages(["东京今天的天气很好", "서울의 지하철 노선도"]),
    )
    assert float(q @ near) > float(q @ far) + 0.2
    assert np.array_equal(
        emb.embed_queries(["同じ"]), emb.embed_passages(["同じ"])
    )  # no prefixes in the fake


def test_dimension_changes_vectors() -> None:
    assert FakeEmbedder(16).embed_passages(["abc"]).shape == (1, 16)
    with pytest.raises(ValueError, match="dim"):
        FakeEmbedder(1)


def test_tokens_are_characters_and_latin_words() -> None:
    emb = FakeEmbedder()
    text = "東京 Tower 2024年"
    spans = emb.token_offsets(text)
    assert [text[a:b] for a, b in spans] == ["東", "京", "Tower", "2024", "年"]
    assert emb.count_tokens(text) == len(spans) + 2
    assert emb.count_tokens("") == 2


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_offsets_cover_every_non_space_character(text: str) -> None:
    emb = FakeEmbedder()
    spans = emb.token_offsets(text)
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert all(p[1] <= q[0] for p, q in itertools.pairwise(spans))
    covered = {i for a, b in spans for i in range(a, b)}
    assert covered == {i for i, c in enumerate(text) if not c.isspace()}
    assert emb.count_tokens(text) == len(spans) + 2


def test_loader_builds_fakes() -> None:
    assert load_embedder("fake").dim == 64
    emb = load_embedder("fake:16")
    assert isinstance(emb, FakeEmbedder) and emb.dim == 16
    for bad in ("fake:x", "fake:1", "fake:-3"):
        with pytest.raises(ConfigError, match=r"embedding\.model"):
            load_embedder(bad)
