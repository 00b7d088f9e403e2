"""Settings and wire schemas of the HTTP service (pydantic; no FastAPI import here).

``ServiceSettings`` is the ``service:`` section of the config file::

    service:
      api_keys_file: keys.yaml         # bearer API keys, hashes only (see cjkrag.service.auth)
      jwt:                             # bearer JWTs, verified with a configured key
        algorithm: HS256               # HS256/384/512 need secret_env; RS*/PS*/ES*/EdDSA need public_key_file
        secret_env: CJKRAG_JWT_SECRET  # the NAME of an environment variable holding the secret
        issuer: https://idp.example    # required: every token's `iss` must be this
        audience: cjkrag               # required: every token's `aud` must contain this
        # verify_issuer: false         # explicit opt-outs (logged as a warning at startup); not advised
        # verify_audience: false
        principals_claim: principals   # list of principals taken as-is
        groups_claim: groups           # each g -> "group:<g>" (null to ignore)
      max_top_k: 100
      max_request_bytes: 65536
      cors_origins: []
      insecure_local_principals: []    # principals of every request under `serve --insecure-local`
      auth_failures_per_minute: 30     # failed authentications per client address (then 429 + Retry-After)
      auth_failure_burst: 20

With neither ``api_keys_file`` nor ``jwt`` the server only starts with ``--insecure-local`` on a loopback
host, and every request then searches with ``insecure_local_principals`` (default: none, so only
documents marked public are visible).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cjkrag.errors import ConfigError

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")

SearchMode = Literal["hybrid", "dense", "keyword"]


class JwtSettings(BaseModel):
    """How bearer JWTs are verified. The algorithm is fixed here, never taken from the token header."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: str = "HS256"
    secret_env: str | None = None
    public_key_file: Path | None = None
    issuer: str | None = None
    audience: str | None = None
    verify_issuer: bool = True
    verify_audience: bool = True
    principals_claim: str = "principals"
    groups_claim: str | None = "groups"
    leeway_s: float = Field(30.0, ge=0, le=600)

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        allowed = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS
        if value not in allowed:
            raise ValueError(f"unsupported JWT algorithm {value!r}; use one of {', '.join(allowed)}")
        return value

    @model_validator(mode="after")
    def _key_matches_algorithm(self) -> JwtSettings:
        if self.algorithm in HMAC_ALGORITHMS:
            if not self.secret_env or self.public_key_file is not None:
                raise ValueError(
                    f"algorithm {self.algorithm} needs `secret_env: NAME_OF_ENV_VAR` (the secret itself is "
                    "read from that environment variable, never written in the config) and no public_key_file"
                )
        elif self.public_key_file is None or self.secret_env:
            raise ValueError(
                f"algorithm {self.algorithm} needs `public_key_file: PATH` (a PEM public key) and no secret_env"
            )
        for field, value, flag in (
            ("issuer", self.issuer, self.verify_issuer),
            ("audience", self.audience, self.verify_audience),
        ):
            if flag and not (value or "").strip():
                claim = "iss" if field == "issuer" else "aud"
                raise ValueError(
                    f"`{field}` is required: every token's `{claim}` claim is checked against it, so that a "
                    f"token minted by the same key for another issuer/service is refused. Set "
                    f"service.jwt.{field}, or opt out explicitly with `verify_{field}: false` (not advised)"
                )
            if not flag and value:
                raise ValueError(f"`{field}` is set but `verify_{field}: false`: remove one of them")
        return self


class ServiceSettings(BaseModel):
    """The ``service:`` section of the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys_file: Path | None = None
    jwt: JwtSettings | None = None
    max_top_k: int = Field(100, ge=1, le=10_000)
    max_request_bytes: int = Field(65_536, ge=1_024, le=16 * 1024 * 1024)
    cors_origins: list[str] = Field(default_factory=list)
    insecure_local_principals: list[str] = Field(default_factory=list)
    auth_failures_per_minute: float = Field(30.0, gt=0, le=100_000)
    auth_failure_burst: int = Field(20, ge=1, le=100_000)
    #: micro-batching of concurrent requests' query embeddings (cjkrag/service/batching.py); 1 turns it off
    batch_max_size: int = Field(32, ge=1, le=1024)
    #: how long a first queued query waits for others before its batch runs
    batch_max_wait_ms: float = Field(2.0, ge=0, le=100)
    #: queries allowed to wait for the model; past it a request gets 503 (overloaded) at once
    batch_max_queue: int = Field(256, ge=1, le=100_000)
    #: searches running at once; the others wait in arrival order (cjkrag/service/batching.py FairGate).
    #: 0 = auto: 4 per CPU core (measured on 2 cores: 8 in flight at 16 clients cut p95 from 2.2x to
    #: 1.5x p50 at the same throughput)
    max_concurrent_searches: int = Field(0, ge=0, le=100_000)
    #: searches allowed to wait for a slot; past it (or after 30 s in line) a request gets 503 overloaded
    max_waiting_searches: int = Field(1024, ge=0, le=1_000_000)

    @property
    def auth_configured(self) -> bool:
        return self.api_keys_file is not None or self.jwt is not None

    @classmethod
    def from_config(
        cls, data: Mapping[str, Any] | None, *, source: str = "config", base_dir: Path | None = None
    ) -> ServiceSettings:
        """The ``service:`` dict of a loaded config (``Config.service``); same as :meth:`from_mapping`."""
        return cls.from_mapping(data, source=source, base_dir=base_dir)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any] | None, *, source: str = "config", base_dir: Path | None = None
    ) -> ServiceSettings:
        """Validate a ``service:`` mapping; errors become ConfigError naming ``source`` and the key.

        Relative ``api_keys_file`` / ``jwt.public_key_file`` are resolved against ``base_dir`` when given.
        """
        try:
            settings = cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"service.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"{source}: invalid service settings: {problems}") from None

        def resolve(path: Path) -> Path:
            path = path.expanduser()
            return base_dir / path if base_dir is not None and not path.is_absolute() else path

        updates: dict[str, Any] = {}
        if settings.api_keys_file is not None:
            updates["api_keys_file"] = resolve(settings.api_keys_file)
        jwt = settings.jwt
        if jwt is not None and jwt.public_key_file is not None:
            updates["jwt"] = jwt.model_copy(update={"public_key_file": resolve(jwt.public_key_file)})
        return settings.model_copy(update=updates) if updates else settings


class SearchRequest(BaseModel):
    """Body of ``POST /v1/search``. ``top_k``'s upper bound is ``service.max_top_k`` (see app.py)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000, description="The query text (1..2000 characters).")
    top_k: int = Field(10, ge=1, description="Number of hits (1..service.max_top_k).")
    mode: SearchMode = Field("hybrid", description="hybrid (dense + keyword, fused), dense or keyword.")
    rerank: bool | None = Field(None, description="Force the cross-encoder on/off; null: as configured.")
    filters: dict[str, Any] | None = Field(None, description="A filter in the cjkrag filter language.")
    language: str | None = Field(
        None,
        max_length=35,
        description="The query's language for the keyword analyzer: zh, ja, ko or en (tags such as zh-TW, "
        "ja-JP are folded); null or auto: detected from the query.",
    )
    principals: list[str] | None = Field(
        None,
        max_length=1000,
        description=(
            "Optional: narrow which of your authenticated principals GRANT access (intersection). Entries "
            "you do not hold are ignored, never added. Deny rules are still checked against ALL your "
            "principals, so narrowing can only hide documents. Absent: all your principals."
        ),
    )


    @field_validator("language")
    @classmethod
    def _supported_language(cls, value: str | None) -> str | None:
        from cjkrag.errors import InputError
        from cjkrag.pipeline.analyzer.normalize import query_language

        try:
            return query_language(value)
        except InputError as exc:
            raise ValueError(str(exc)) from None


class HitOut(BaseModel):
    doc_id: str
    chunk_id: str
    text: str
    score: float
    start: int
    end: int
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    scores: dict[str, float] = Field(
        default_factory=dict, description="Per stage: dense, keyword, fused, rerank."
    )
    ranks: dict[str, int] = Field(default_factory=dict, description="1-based rank per stage.")


class SearchResponse(BaseModel):
    hits: list[HitOut]
    took_ms: float


class ErrorOut(BaseModel):
    error: str
    detail: str
