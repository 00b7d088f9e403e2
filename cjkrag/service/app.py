"""The HTTP service: ``POST /v1/search``, ``GET /healthz``, ``GET /readyz``, OpenAPI at ``/docs``.

FastAPI and uvicorn are imported inside :func:`create_app` / :func:`run_server`, so importing this module
stays light. Models load once, in the lifespan (``engine.warm_up()``); ``/v1/search`` is a sync endpoint,
so searches run in the threadpool and never block the event loop; the engine is shared read-only.
Concurrent requests' query embeddings are computed together in micro-batches (:mod:`cjkrag.service.batching`,
``service.batch_*`` settings); a full batch queue is a 503 ``overloaded`` with ``Retry-After``.

Every search runs with ALL the caller's authenticated principals (see :mod:`cjkrag.service.auth`). The
optional ``principals`` body field narrows only the allow side (``Engine.search(narrow_to=...)``): a
principal the caller does not hold is ignored, and ``deny`` is still checked against every held principal.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cjkrag.errors import AccessError, ConfigError, FilterError, InputError, StoreUnavailable, missing
from cjkrag.service.auth import Authenticator, AuthError, Caller, TooManyFailures, is_loopback_host
from cjkrag.service.batching import FairGate, Overloaded
from cjkrag.service.schemas import ErrorOut, SearchRequest, SearchResponse, ServiceSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cjkrag.types import Hit

log = logging.getLogger("cjkrag.service")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@runtime_checkable
class EngineLike(Protocol):
    """What the service needs from an engine (``cjkrag.engine.Engine`` satisfies it)."""

    def search(
        self,
        query: str,
        *,
        principals: Sequence[str],
        narrow_to: Sequence[str] | None = None,
        top_k: int = 10,
        mode: str = "hybrid",
        rerank: bool | None = None,
        filters: Mapping[str, Any] | None = None,
        language: str | None = None,
    ) -> list[Hit]: ...

    def ready(self) -> dict[str, Any]: ...

    def warm_up(self) -> None: ...


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes`` (declared Content-Length or streamed bytes)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            try:
                size = int(declared[0])
            except ValueError:
                await _send_json(send, 400, {"error": "bad_request", "detail": "invalid Content-Length"})
                return
            if size > self.max_bytes:
                await self._too_large(send)
                return
        chunks: list[bytes] = []
        total = 0
        while True:  # buffer the (small, bounded) body, then replay it to the app
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        detail = f"request body larger than {self.max_bytes} bytes (service.max_request_bytes)"
        await _send_json(send, 413, {"error": "request_too_large", "detail": detail})


async def _send_json(send: Send, status: int, payload: dict[str, str]) -> None:
    body = json.dumps(payload).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=dict(headers or {}))


def log_ignored_narrowing(caller: Caller, requested: Sequence[str] | None) -> None:
    """Log (count only) the body principals the caller does not hold; the engine ignores them."""
    if requested is None:
        return
    from cjkrag.connectors.filters import normalize_principal

    held = set(caller.principals)
    ignored = {normalize_principal(p) for p in requested if isinstance(p, str)} - held
    if ignored:
        log.info("caller %s asked for %d principal(s) it does not hold; ignored", caller.id, len(ignored))


def create_app(
    engine: EngineLike,
    settings: ServiceSettings,
    *,
    insecure_local: bool = False,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The FastAPI app. ``authenticator`` defaults to ``Authenticator.from_settings(settings, ...)``.

    Raises ConfigError when no authentication is configured and ``insecure_local`` is False.
    """
    try:
        from fastapi import Depends, FastAPI, Request, Response
        from fastapi.middleware.cors import CORSMiddleware
        from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
        from pydantic import Field, create_model
        from starlette.concurrency import run_in_threadpool
    except ImportError as exc:
        raise missing("service", "fastapi") from exc

    auth = authenticator or Authenticator.from_settings(settings, insecure_local=insecure_local)
    state = _ReadyState(engine)

    batchers: list[Any] = []
    gate = FairGate(settings.max_concurrent_searches or 4 * (os.cpu_count() or 1),
                    max_waiting=settings.max_waiting_searches)  # fmt: skip

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.warm_up, True)
        enable = getattr(engine, "enable_query_batching", None)
        if enable is not None and settings.batch_max_size > 1 and state.loaded:
            batchers.append(enable(max_batch=settings.batch_max_size, max_wait_ms=settings.batch_max_wait_ms,
                                   max_queue=settings.batch_max_queue))  # fmt: skip
        yield
        for b in batchers:
            b.close()

    app = FastAPI(
        title="cjkrag",
        summary="Hybrid CJK retrieval with access control",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.search_gate = gate
    app.state.authenticator = auth
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
        )

    request_model = create_model(
        "SearchRequest",
        __base__=SearchRequest,
        top_k=(
            int,
            Field(min(10, settings.max_top_k), ge=1, le=settings.max_top_k, description="Number of hits."),
        ),
    )
    bearer = HTTPBearer(auto_error=False, description="An API key or a JWT, as `Authorization: Bearer ...`")

    def current_caller(request: Any, credentials: Any = Depends(bearer)) -> Caller:
        token = credentials.credentials if credentials is not None else None
        client = request.client.host if request.client is not None else None
        return auth.authenticate(token, client)

    _annotate(current_caller, request=Request, credentials=HTTPAuthorizationCredentials | None)

    def search(body: Any, response: Any, caller: Caller = Depends(current_caller)) -> Any:
        log_ignored_narrowing(caller, body.principals)
        started = time.perf_counter()
        try:
            with gate:
                hits = engine.search(
                    body.query,
                    principals=caller.principals,  # all of them: deny is checked against every held principal
                    narrow_to=body.principals,
                    top_k=body.top_k,
                    mode=body.mode,
                    rerank=body.rerank,
                    filters=body.filters,
                    language=body.language,  # checked by SearchRequest: a supported code or None (detect)
                )
        except FilterError as exc:
            return _error(400, "invalid_filter", str(exc))
        except (ConfigError, InputError) as exc:
            return _error(400, "invalid_request", str(exc))
        except AccessError:
            log.warning("search refused by the engine for caller %s", caller.id, exc_info=True)
            return _error(403, "forbidden", "not allowed")
        except StoreUnavailable:
            log.warning("search failed: store unavailable", exc_info=True)
            return _error(503, "store_unavailable", "the document store is unavailable; retry later")
        except Overloaded as exc:
            log.warning("search refused: %s", exc)
            return _error(503, "overloaded", "too many concurrent searches; retry later", {"Retry-After": "1"})
        except Exception:
            log.exception("search failed for caller %s", caller.id)
            return _error(500, "internal_error", "internal error")
        took_ms = (time.perf_counter() - started) * 1000.0
        log.info("search caller=%s mode=%s top_k=%d hits=%d took_ms=%.1f", caller.id, body.mode, body.top_k,
                 len(hits), took_ms)  # fmt: skip
        response.headers["Cache-Control"] = "no-store"
        return {"hits": [hit.to_dict() for hit in hits], "took_ms": took_ms}

    _annotate(search, body=request_model, response=Response)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorOut, "description": text}
        for code, text in [
            (400, "Invalid filter or request"),
            (401, "Missing or invalid credentials"),
            (403, "No principals"),
            (413, "Body too large"),
            (429, "Too many failed authentications from this address"),
            (503, "Store unavailable, or overloaded (queue full; Retry-After)"),
        ]
    }
    app.add_api_route(
        "/v1/search", search, methods=["POST"], response_model=SearchResponse, responses=errors,
        summary="Search the documents the caller may read",
    )  # fmt: skip

    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def readyz() -> Any:
        if not state.warm_up(False):
            return _error(503, "not_ready", "models are not loaded yet")
        try:
            engine.ready()
        except StoreUnavailable:
            log.warning("readyz: store unavailable", exc_info=True)
            return _error(503, "not_ready", "the document store is unavailable")
        except Exception:
            log.exception("readyz: engine.ready() failed")
            return _error(503, "not_ready", "not ready")
        return {"status": "ready"}

    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Liveness (no auth)")
    app.add_api_route(
        "/readyz", readyz, methods=["GET"], summary="Readiness: models loaded and store reachable (no auth)",
        responses={503: {"model": ErrorOut, "description": "Not ready"}},
    )  # fmt: skip

    async def on_auth_error(_: Any, exc: Exception) -> Any:
        if isinstance(exc, TooManyFailures):
            return _error(
                429, "too_many_requests", "too many failed authentications; retry later",
                {"Retry-After": str(exc.retry_after_s)},
            )  # fmt: skip
        if isinstance(exc, AuthError) and exc.status_code == 401:
            header = 'Bearer error="invalid_token"' if getattr(exc, "invalid_token", False) else "Bearer"
            return _error(401, "unauthorized", "missing or invalid credentials", {"WWW-Authenticate": header})
        return _error(403, "forbidden", "not allowed")

    app.add_exception_handler(AuthError, on_auth_error)
    return app


class _ReadyState:
    """Whether ``engine.warm_up()`` has succeeded; retried (once at a time) by /readyz after a failure."""

    def __init__(self, engine: EngineLike) -> None:
        self.engine = engine
        self.loaded = False
        self._lock = threading.Lock()

    def warm_up(self, startup: bool) -> bool:
        if self.loaded:
            return True
        if not self._lock.acquire(blocking=startup):
            return False  # another thread is warming up
        try:
            if not self.loaded:
                self.engine.warm_up()
                self.loaded = True
        except StoreUnavailable:
            log.warning(
                "warm-up: store unavailable; /readyz reports 503 until it is reachable", exc_info=True
            )
        except Exception:
            if startup:
                log.exception("warm-up failed; the server cannot start")
                raise
            log.exception("warm-up retry failed")
        finally:
            self._lock.release()
        return self.loaded


def _annotate(fn: Callable[..., Any], **types: Any) -> None:
    """Give FastAPI real types for parameters whose types are imported lazily (see module docstring)."""
    fn.__annotations__.update(types)


def _version() -> str:
    from cjkrag import __version__

    return __version__


def run_server(
    engine_factory: Callable[[], EngineLike],
    settings: ServiceSettings,
    host: str,
    port: int,
    insecure_local: bool,
) -> None:
    """Check the auth setup, build the engine and serve with uvicorn until interrupted.

    Refuses to start (ConfigError) without authentication, unless ``insecure_local`` and ``host`` is a
    loopback address; the engine is built only after these checks and the keys/JWT key load.
    """
    _log_to_stderr()
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: not a TCP port (0..65535)")
    if not settings.auth_configured:
        if not insecure_local:
            raise ConfigError(
                "refusing to start without authentication: set service.api_keys_file (keys from `cjkrag keys "
                "create`) and/or service.jwt in the config; for local testing only, add --insecure-local and "
                "bind to 127.0.0.1"
            )
        if not is_loopback_host(host):
            raise ConfigError(
                f"refusing to serve without authentication on --host {host}: --insecure-local only binds to "
                "loopback (127.0.0.1, ::1, localhost); configure service.api_keys_file or service.jwt to "
                "serve on other interfaces"
            )
        log.warning(
            "INSECURE LOCAL MODE: no authentication; every request searches as %s",
            list(settings.insecure_local_principals) or "[] (public documents only)",
        )
    auth = Authenticator.from_settings(settings, insecure_local=insecure_local)
    try:
        import uvicorn
    except ImportError as exc:
        raise missing("service", "uvicorn") from exc
    app = create_app(engine_factory(), settings, insecure_local=insecure_local, authenticator=auth)
    uvicorn.run(app, host=host, port=port, workers=1, server_header=False, log_level="info")


def _log_to_stderr() -> None:
    """Show cjkrag's INFO logs (searches, refused credentials) next to uvicorn's, unless logging is set up."""
    package = logging.getLogger("cjkrag")
    if package.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)
