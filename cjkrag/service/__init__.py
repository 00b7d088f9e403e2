"""The authenticated HTTP service (``cjkrag serve``). FastAPI/uvicorn are imported only when used.

Public API: :func:`create_app`, :func:`run_server`, :class:`EngineLike`, :class:`ServiceSettings`,
:class:`JwtSettings`, :func:`generate_api_key`, :func:`hash_api_key`, :func:`load_api_keys`.
"""

from __future__ import annotations

from cjkrag.service.app import EngineLike, create_app, run_server
from cjkrag.service.auth import (
    Authenticator,
    Caller,
    FailureLimiter,
    Forbidden,
    TooManyFailures,
    Unauthenticated,
    generate_api_key,
    hash_api_key,
    load_api_keys,
)
from cjkrag.service.schemas import JwtSettings, SearchRequest, ServiceSettings

__all__ = [
    "Authenticator",
    "Caller",
    "EngineLike",
    "FailureLimiter",
    "Forbidden",
    "JwtSettings",
    "SearchRequest",
    "ServiceSettings",
    "TooManyFailures",
    "Unauthenticated",
    "create_app",
    "generate_api_key",
    "hash_api_key",
    "load_api_keys",
    "run_server",
]
