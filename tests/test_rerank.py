"""Cross-encoder reranking with a tiny real BERT cross-encoder trained locally (tests/tiny_reranker.py)."""

from __future__ import annotations

import itertools
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach the Hub from the tests

import pytest

from cjkrag.errors import ConfigError, InputError, ModelError
from cjkrag.pipeline.rerank import NO_SCORE, CrossEncoderReranker, Reranker, load_reranker

sys.path.insert(0, str(Path(__file__).parent))
from tiny_reranker import FILLER, PAIRS, build_tiny_reranker

PASSAGES = [p for _, p in PAIRS]
LONG_FILLER = "".join(FILLER[k % len(FILLER)] for k in range(12))  # ~90 characters, relevant to nothing


@pytest.fixture(scope="session")
def model_dir() -> Path:
    pytest.importorskip("sentence_transformers")
    return build_tiny_reranker()


@pytest.fixture(scope="session")
def reranker(model_dir: Path) -> CrossEncoderReranker:
    model = CrossEncoderReranker(str(model_dir), device="auto", batch_size=8, max_length=64)
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def short_window(model_dir: Path) -> CrossEncoderReranker:
    """max_length 40: the long passages below need several windows."""
    return CrossEncoderReranker(str(model_dir), device="cpu", max_length=40, window_overlap_tokens=8)


def test_scores_flow(reranker: CrossEncoderReranker, model_dir: Path) -> None:
    assert isinstance(reranker, Reranker)
    import torch

    assert reranker.resolved_device == ("cuda" if torch.cuda.is_available() else "cpu")  # auto
    query = PAIRS[0][0]
    scores = reranker.score(query, PASSAGES[:5])
    assert len(scores) == 5
    assert all(math.isfinite(s) and 0.0 < s < 1.0 for s in scores)
    assert reranker.score(query, []) == []
    raw = CrossEncoderReranker(str(model_dir), device="auto", max_length=64, activation="identity")
    logits = raw.score(query, PASSAGES[:5])
    assert [1 / (1 + math.exp(-x)) for x in logits] == pytest.approx(scores, rel=1e-5)
    assert reranker.score(query, PASSAGES[:5]) == pytest.approx(scores)  # deterministic
    with pytest.raises(InputError, match="not one string"):
        reranker.score(query, "a single string")


def test_relevant_passage_ranks_first_for_every_training_query(reranker: CrossEncoderReranker) -> None:
    for i, (query, _) in enumerate(PAIRS):
        scores = reranker.score(query, PASSAGES)
        best = max(range(len(PASSAGES)), key=scores.__getitem__)
        assert best == i, f"{query!r}: best is {PASSAGES[best]!r}, expected {PASSAGES[i]!r}"


def test_batch_size_does_not_change_scores(model_dir: Path, reranker: CrossEncoderReranker) -> None:
    one_by_one = CrossEncoderReranker(str(model_dir), device="auto", batch_size=1, max_length=64)
    query = PAIRS[12][0]
    # same device as the fixture; fp16 on CUDA pads differently per batch, hence the looser bound there
    tolerance = 1e-5 if reranker.resolved_device == "cpu" else 1e-3
    assert one_by_one.score(query, PASSAGES) == pytest.approx(reranker.score(query, PASSAGES), abs=tolerance)


def test_window_spans_cover_a_long_passage(short_window: CrossEncoderReranker) -> None:
    query, passage = PAIRS[3]
    long = LONG_FILLER + passage
    spans = short_window.window_spans(query, long)
    assert len(spans) > 1
    assert spans[0][0] == 0 and spans[-1][1] == len(long)  # first starts at 0, last ends at the end
    for (s1, e1), (s2, e2) in itertools.pairwise(spans):
        assert s1 < s2 < e1 <= e2  # consecutive windows overlap and move forward
    assert long[spans[-1][0] : spans[-1][1]].endswith(passage)
    assert short_window.window_spans(query, passage) == [(0, len(passage))]  # fits: one window


@pytest.mark.parametrize("index", [0, 7, 10, 16, 20, 27])  # Chinese, Japanese, Korean queries
def test_windowing_finds_relevant_text_at_the_end(
    index: int, model_dir: Path, short_window: CrossEncoderReranker
) -> None:
    query, passage = PAIRS[index]
    long = LONG_FILLER + passage
    head_only = CrossEncoderReranker(str(model_dir), device="cpu", max_length=40, max_windows=1)
    short_score = short_window.score(query, [passage])[0]
    windowed = short_window.score(query, [long])[0]
    truncated = head_only.score(query, [long])[0]
    others = short_window.score(query, [p for j, p in enumerate(PASSAGES) if j != index])
    assert windowed > max(others)  # still ranks as the relevant passage
    assert windowed > truncated  # without windows the relevant end is cut off
    assert truncated < short_score
    assert abs(windowed - short_score) < 0.5 * (short_score - max(others))  # scores like the short one


def test_long_query_is_cut_and_still_scored(short_window: CrossEncoderReranker) -> None:
    query = PAIRS[0][0] * 20  # ~100 tokens: more than max_length alone
    scores = short_window.score(query, [PASSAGES[0], PASSAGES[1]])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert scores[0] > scores[1]


def test_rerank_reorders_top_n_and_keeps_the_tail(reranker: CrossEncoderReranker) -> None:
    query = PAIRS[21][0]
    items = [{"id": f"d{j}", "text": PASSAGES[j]} for j in (2, 5, 9, 21, 14, 21, 3)]
    out = reranker.rerank(query, items, lambda it: it["text"], top_n=4)
    assert len(out) == len(items)
    assert out[0][0] is items[3]  # the relevant passage (4th) moved to the top
    head_scores = [s for _, s in out[:4]]
    assert head_scores == sorted(head_scores, reverse=True)
    assert {id(it) for it, _ in out[:4]} == {id(it) for it in items[:4]}
    assert [it for it, _ in out[4:]] == items[4:]  # the duplicate at position 6 was not promoted
    assert all(score == NO_SCORE for _, score in out[4:])
    assert reranker.rerank(query, [], lambda it: it, top_n=3) == []
    with pytest.raises(ConfigError, match=r"rerank\.top_n"):
        reranker.rerank(query, items, lambda it: it["text"], top_n=0)


def test_thread_safe(reranker: CrossEncoderReranker) -> None:
    queries = [q for q, _ in PAIRS[:8]]
    expected = [reranker.score(q, PASSAGES[:10]) for q in queries]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda q: reranker.score(q, PASSAGES[:10]), queries * 2))
    for i, scores in enumerate(got):
        assert scores == pytest.approx(expected[i % len(queries)], abs=1e-6)


def test_load_reranker(model_dir: Path) -> None:
    assert load_reranker(None) is None
    assert load_reranker("none") is None
    assert load_reranker(" None ") is None
    assert load_reranker("") is None
    loaded = load_reranker(str(model_dir), device="cpu", max_length=64)
    assert isinstance(loaded, CrossEncoderReranker)
    assert loaded._model is None  # lazy: nothing loaded yet
    assert loaded.score(PAIRS[1][0], PASSAGES[:3])[1] == max(loaded.score(PAIRS[1][0], PASSAGES[:3]))
    with pytest.raises(ConfigError, match=r"rerank\.model"):
        load_reranker(42)  # type: ignore[arg-type]


def test_bad_models_and_settings(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no such folder"):
        CrossEncoderReranker(str(tmp_path / "missing")).warm_up()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"local folder.*Fix"):
        CrossEncoderReranker(str(empty)).warm_up()
    with pytest.raises(ModelError, match=r"not-a-real-org/no-such-reranker.*hf download"):
        CrossEncoderReranker("not-a-real-org/no-such-reranker", device="cpu").warm_up()
    with pytest.raises(ConfigError, match=r"rerank\.batch_size"):
        CrossEncoderReranker("x", batch_size=0)
    with pytest.raises(ConfigError, match=r"rerank\.model"):
        CrossEncoderReranker("  ")
    with pytest.raises(ConfigError, match=r"rerank\.activation"):
        CrossEncoderReranker("x", activation="softmax")  # type: ignore[arg-type]
