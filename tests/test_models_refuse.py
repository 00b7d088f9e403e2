"""The gate refuses deliberately bad models, with the real bundled multilingual-e5-small (CPU, small):

* one fine-tuned for a few steps on SHUFFLED pairs (each query paired with another query's positive);
* one over-quantized: every linear weight rounded to 1 bit (its sign times the row's mean magnitude).

Evaluation: the shuffled model on 40 held-out LCQMC question pairs among their positives and 80 distractors
(the base scores nDCG@10 1.0 there). The 1-bit model is gated on 60 held-out BQ bank questions: on the
LCQMC near-duplicates it PASSED (nDCG@10 1.0 — intact token embeddings and residual paths still match
near-identical strings), while on all 174 BQ held-out queries it lost 0.158 nDCG@10 (21 wins / 66 losses).
Gate on sets that look like your queries.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED

LCQMC = SHARED / "data" / "eval" / "lcqmc"
pytestmark = pytest.mark.skipif(not LCQMC.is_dir(), reason=f"shared data missing: {LCQMC}")
pytest.importorskip("sentence_transformers")
pytest.importorskip("ir_measures")

BASE = "bundled:multilingual-e5-small"


@pytest.fixture(scope="module")
def split() -> Any:
    from cjkrag.pipeline.models.pairs import read_labelled_pairs, split_labelled

    return split_labelled(read_labelled_pairs(LCQMC), heldout_fraction=0.2, seed=13, max_train=64, max_heldout=40)


@pytest.fixture(scope="module")
def heldout(split: Any) -> Any:
    from cjkrag.pipeline.models.pairs import pairs_to_beir

    return pairs_to_beir(split.heldout, split.distractors, name="lcqmc-heldout-40")


@pytest.fixture(scope="module")
def bq_heldout() -> Any:
    from cjkrag.pipeline.models.pairs import pairs_to_beir, read_labelled_pairs, split_labelled

    bq = SHARED / "data" / "eval" / "bq"
    if not bq.is_dir():
        pytest.skip(f"shared data missing: {bq}")
    s = split_labelled(read_labelled_pairs(bq), heldout_fraction=0.2, seed=13, max_train=1, max_heldout=60)
    return pairs_to_beir(s.heldout, s.distractors, name="bq-heldout-60")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emb-cache")


def _gate(candidate: Path, heldout: Any, cache: Path) -> dict[str, Any]:
    from cjkrag.pipeline.models.gate import run_gate

    return run_gate(str(candidate), [heldout], base=BASE, device="cpu", cache_dir=cache, profile="bundled")


def test_gate_refuses_model_trained_on_shuffled_pairs(split: Any, heldout: Any, cache: Path, tmp_path: Path) -> None:
    from cjkrag.pipeline.models.finetune import TrainConfig, finetune_embedder
    from cjkrag.pipeline.models.pairs import Pair

    train = split.train
    positives = [p.positive for p in train]
    random.Random(0).shuffle(positives)
    shuffled = [Pair(p.query, pos) for p, pos in zip(train, positives, strict=True) if pos != p.positive]
    out = tmp_path / "shuffled"
    info = finetune_embedder(shuffled, out, base=BASE, cfg=TrainConfig(
        max_steps=6, batch_size=8, lr=1e-3, warmup_ratio=0.0, max_length=32, device="cpu", progress=False,
        save_every=0))  # fmt: skip
    assert info["steps"] == 6
    report = _gate(out, heldout, cache)
    row = report["sets"][0]
    assert report["passed"] is False, row
    assert row["candidate"]["ndcg@10"] < row["base"]["ndcg@10"] - 0.01
    assert row["losses"] > row["wins"]


def test_gate_refuses_one_bit_model(bq_heldout: Any, cache: Path, tmp_path: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from cjkrag.ingest.embedding.bundled import ensure_bundled_model

    model = SentenceTransformer(str(ensure_bundled_model()), device="cpu")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                w.copy_(torch.sign(w) * w.abs().mean(dim=1, keepdim=True))
    out = tmp_path / "one-bit"
    model.save(str(out))
    report = _gate(out, bq_heldout, cache)
    row = report["sets"][0]
    assert report["passed"] is False, row
    assert row["losses"] > row["wins"]


def test_gate_passes_the_base_model_itself(heldout: Any, cache: Path) -> None:
    from cjkrag.ingest.embedding.bundled import ensure_bundled_model

    report = _gate(ensure_bundled_model(), heldout, cache)
    assert report["passed"] is True
    assert report["sets"][0]["losses"] == 0
