"""Typed configuration: ``configs/default.yaml`` (packaged) overlaid with a user's YAML file or dict.

Unknown keys and wrong types are :class:`~cjkrag.errors.ConfigError` naming the key (``store.milvus.uri``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cjkrag.errors import ConfigError

DATA_DIR_ENV = "CJKRAG_DATA_DIR"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MilvusConfig(_Strict):
    uri: str = "milvus.db"
    token: str | None = None
    #: name of the environment variable holding the token (preferred over ``token``: never written out)
    token_env: str | None = None
    #: consistency level of searches. ``auto``: ``Bounded`` on a server (a search does not wait for the newest
    #: writes to be applied; they, and ACL changes, show within Milvus' staleness bound, seconds), ``Strong``
    #: on Milvus Lite (one local process: a search right after an ingest sees it). Ingestion's own re-reads,
    #: counts and Lite's access-clause resolution always run ``Strong``.
    search_consistency: Literal["auto", "Strong", "Bounded", "Session", "Eventually"] = "auto"


class QdrantConfig(_Strict):
    """``mode``: ``edge`` (qdrant-edge-py, Qdrant's Rust engine in-process: the fast embedded default),
    ``local`` (qdrant-client's pure-Python local mode; ``path: ":memory:"`` for tests) or ``server``."""

    mode: Literal["edge", "local", "server"] = "edge"
    path: str = "qdrant"  # edge/local: a folder, relative to data_dir
    url: str | None = None  # server: http(s)://host:6333
    prefer_grpc: bool = False
    api_key_env: str = "QDRANT_API_KEY"
    #: BM25's average document length in analyzer tokens, fixed per collection (Qdrant's IDF modifier keeps df,
    #: not lengths): "auto" = the mean over the first batch ever written, recorded with the collection
    bm25_avgdl: Literal["auto"] | Annotated[float, Field(gt=0)] = "auto"


class WeaviateConfig(_Strict):
    url: str = "http://localhost:8080"
    grpc_port: int = Field(50051, ge=1, le=65535)
    api_key_env: str = "WEAVIATE_API_KEY"


class ElasticsearchConfig(_Strict):
    url: str = "http://localhost:9200"
    api_key_env: str = "ES_API_KEY"
    #: ``wait_for``: a write returns once searchable (ingestion re-reads what it wrote); ``false``: faster bulk
    refresh: Literal["wait_for", "false", "true"] = "wait_for"
    #: int8-quantized HNSW (4x less memory, slightly lower recall) instead of float HNSW
    int8_hnsw: bool = False


class StoreConfig(_Strict):
    #: a built-in backend (milvus, qdrant, weaviate, elasticsearch) or one registered by a package under
    #: the ``cjkrag.stores`` entry-point group; checked when the store is opened (``connectors.registry``)
    backend: str = Field("milvus", pattern=r"^[a-z][a-z0-9_+-]{0,63}$")
    #: pair the vector store with Elasticsearch for the keyword side (ingestion writes and deletes both)
    keyword_backend: Literal["elasticsearch"] | None = None
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
    qdrant: QdrantConfig = Field(default_factory=QdrantConfig)
    weaviate: WeaviateConfig = Field(default_factory=WeaviateConfig)
    elasticsearch: ElasticsearchConfig = Field(default_factory=ElasticsearchConfig)
    #: settings of a third-party backend (its factory validates them)
    options: dict[str, Any] = Field(default_factory=dict)


class EmbeddingConfig(_Strict):
    model: str = "bundled:multilingual-e5-small"
    profile: str = "auto"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|mps|cuda:\d+)$")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    batch_size: int = Field(32, ge=1, le=4096)
    #: runtime: torch (sentence-transformers), or onnx / openvino for a CPU build written by
    #: `cjkrag models optimize` that passed its gate (embedding.model is then that build's folder)
    backend: Literal["torch", "onnx", "openvino"] = "torch"
    #: CPU threads for query embeddings; 0 = auto: half the cores, at least 1 (the rest is left to the
    #: store; measured faster, see cjkrag/__init__.py). Passages (ingestion) use torch's default.
    query_threads: int = Field(0, ge=0, le=1024)
    #: CPU: query embeddings run as a TorchScript trace of the model (built by ``Engine.warm_up``, verified
    #: against the eager model, eager if it differs), one call per batch without the GIL, so the HTTP
    #: service's request threads do not stall the model (README "Query speed"); false: always eager
    trace_queries: bool = True


#: Where a chunk's context line (document title, section path) goes: the keyword index, the embedded text,
#: both or neither. Chunk text, offsets and citations are the body either way (README, Results).
ContextPlacement = Literal["none", "keywords", "embedding", "both"]


class ChunkingConfig(_Strict):
    max_tokens: int = Field(512, ge=16, le=8192)
    overlap_tokens: int = Field(64, ge=0)
    context: ContextPlacement = "keywords"

    @property
    def context_keywords(self) -> bool:
        return self.context in ("keywords", "both")

    @property
    def context_embedding(self) -> bool:
        return self.context in ("embedding", "both")


class AnalyzerConfig(_Strict):
    bigrams: bool = True
    traditional_to_simplified: bool = True
    stopwords: bool = True


def _default_weights() -> dict[Literal["dense", "keyword"], float]:
    return {"dense": 1.0, "keyword": 1.0}


class FusionConfig(_Strict):
    method: Literal["rrf", "weighted", "dbsf", "adaptive"] = "adaptive"
    #: adaptive only: run signals multiplied into each run's weight (``fill``, ``standout``, ``gap``), and
    #: the hit count ``fill`` calls full; the keyword run's language agreement is always applied
    signals: list[Literal["fill", "standout", "gap"]] = Field(default_factory=list)
    fill_at: int = Field(20, ge=1)
    k: int = Field(60, ge=1)
    weights: dict[Literal["dense", "keyword"], float] = Field(default_factory=_default_weights)
    normalization: Literal["minmax", "zscore"] = "zscore"


class RetrievalConfig(_Strict):
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    top_k: int = Field(10, ge=1, le=1000)
    candidates: int = Field(100, ge=1, le=16384)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    #: query embeddings kept in an LRU (key: model, query prompt, text); 0 turns the cache off
    query_cache_size: int = Field(1024, ge=0, le=1_000_000)
    #: hybrid: run the keyword side on a worker thread while the query is embedded
    concurrent: bool = True


class RerankConfig(_Strict):
    model: str = "none"
    top_n: int = Field(50, ge=1, le=1000)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(512, ge=16)


class RayConfig(_Strict):
    """`cjkrag ingest --engine ray` (see ingest/ray_engine.py)."""

    #: null: $RAY_ADDRESS if set, else a local Ray started for the run; e.g. "auto", "ray://head:10001"
    address: str | None = None
    #: 0: one actor per GPU when the cluster has GPUs, else one per cpus_per_actor CPUs
    actors: int = Field(0, ge=0)
    cpus_per_actor: float = Field(0, ge=0)  # 0: all CPUs of a local Ray; 4 on a cluster without GPUs
    gpus_per_actor: float | None = Field(None, ge=0)  # null: 1 when the cluster has GPUs, else 0
    in_flight_per_actor: int = Field(2, ge=1, le=64)  # batches queued on each actor (backpressure)
    batch_docs: int = Field(32, ge=1, le=10000)  # documents per actor call


class IngestConfig(_Strict):
    #: local: threads in this process; ray: Ray actors chunk/analyze/embed, this process writes
    engine: Literal["local", "ray"] = "local"
    ray: RayConfig = Field(default_factory=RayConfig)
    #: worker processes that chunk and analyze (0: the reading thread does; measured no faster on 2 cores)
    workers: int = Field(0, ge=0, le=256)
    batch_size: int = Field(64, ge=1, le=10000)
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1)
    #: `cjkrag ingest --sync` refuses to delete more than this share of the collection's documents without --yes
    sync_max_delete_share: float = Field(0.5, ge=0.0, le=1.0)


class Config(_Strict):
    data_dir: Path | None = None
    collection: str = Field("cjkrag", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    store: StoreConfig = Field(default_factory=StoreConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    analyzer: AnalyzerConfig = Field(default_factory=AnalyzerConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    #: validated by cjkrag.service (ServiceSettings) when the HTTP service starts
    service: dict[str, Any] = Field(default_factory=dict)

    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return Path(self.data_dir).expanduser()
        return Path(os.environ.get(DATA_DIR_ENV) or "cjkrag-data")

    def milvus_uri(self) -> str:
        """A server URI as is; a Milvus Lite file path resolved against the data dir."""
        uri = self.store.milvus.uri
        if "://" in uri:
            return uri
        path = Path(uri).expanduser()
        return str(path if path.is_absolute() else self.resolved_data_dir() / path)

    def data_path(self, path: str) -> Path:
        """A store file/folder path: absolute as is, relative ones under the data dir."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.resolved_data_dir() / p

    def analyzer_tag(self) -> str:
        """The analyzer settings a collection's keywords were made with (stored with the collection)."""
        a = self.analyzer
        # kw=title+body: each chunk's keywords include its document title / section path (issue 12)
        kw = "title+body" if self.chunking.context_keywords else "body"
        return f"bigrams={a.bigrams},t2s={a.traditional_to_simplified},stop={a.stopwords},kw={kw}"


def _default_dict() -> dict[str, Any]:
    text = resources.files("cjkrag.configs").joinpath("default.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (remove it or check its spelling against configs/default.yaml)")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return ConfigError(f"invalid configuration in {source}:\n  " + "\n  ".join(lines))


def load_config(config: str | Path | Mapping[str, Any] | Config | None = None) -> Config:
    """The packaged defaults overlaid with ``config`` (a YAML path, a dict, or a Config)."""
    if isinstance(config, Config):
        return config
    source = "the packaged default (configs/default.yaml)"
    overlay: Mapping[str, Any] = {}
    if isinstance(config, (str, Path)):
        path = Path(config)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist: pass an existing YAML file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read ({exc}): save it as UTF-8 YAML") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must be a YAML mapping (key: value), not {type(loaded).__name__}")
        overlay = loaded
    elif isinstance(config, Mapping):
        source = "the config dict"
        overlay = config
    elif config is not None:
        raise ConfigError(f"config must be a path, a dict or None, not {type(config).__name__}")
    try:
        return Config.model_validate(_merge(_default_dict(), overlay))
    except ValidationError as exc:
        raise _explain(exc, source) from None
