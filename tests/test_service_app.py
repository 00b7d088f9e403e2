"""cjkrag.service.app over FastAPI's TestClient, with a FakeEngine standing in for the real engine.

The FakeEngine enforces access the way the real engine must, written independently of the filter module:
a document is visible when it is public or its ACL meets the principals that grant access (all held ones,
or those of them the caller narrowed to), AND its deny list meets NONE of the principals held (narrowing
never lifts a deny). It records every call's principals and narrowing, so the tests check what the
service passes down, not only what comes back. tests/test_service_access.py runs the same front over the
real Engine (Milvus Lite).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from fastapi.testclient import TestClient

from cjkrag.errors import ConfigError, FilterError, ModelError, StoreUnavailable
from cjkrag.service import EngineLike, ServiceSettings, create_app, hash_api_key, run_server
from cjkrag.service.schemas import JwtSettings
from cjkrag.types import Hit

DOCS = {  # doc_id -> (acl, public, deny)
    "support-faq": (("group:support",), False, ()),
    "sales-plan": (("group:sales",), False, ()),
    "sales-board": (("group:sales",), False, ("user:bob",)),  # sales, except bob
    "bob-notes": (("user:bob",), False, ()),
    "welcome": ((), True, ()),
}
SUPPORT_KEY, SALES_KEY, EMPTY_KEY = "cjk_support-key-for-tests", "cjk_sales-key-for-tests", "cjk_empty"
SECRET = "jwt-secret-for-tests-0123456789abcdef-xyz"


class FakeEngine:
    """Stands in for cjkrag.engine.Engine (which needs models + a store)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.narrowings: list[tuple[str, ...] | None] = []
        self.languages: list[str | None] = []
        self.lock = threading.Lock()
        self.warm_ups = 0
        self.store_up = True
        self.fail_with: Exception | None = None

    def warm_up(self) -> None:
        self.warm_ups += 1

    def ready(self) -> dict[str, Any]:
        if not self.store_up:
            raise StoreUnavailable("milvus at http://db:19530 is down")
        return {"store": "fake", "documents": len(DOCS)}

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
    ) -> list[Hit]:
        with self.lock:
            self.calls.append((query, tuple(principals)))
            self.languages.append(language)
            self.narrowings.append(None if narrow_to is None else tuple(narrow_to))
        if self.fail_with is not None:
            raise self.fail_with
        if filters and "bogus" in filters:
            raise FilterError("unknown field 'bogus' in filter: use doc_id, acl, metadata.<name>, ...")
        held = set(principals)
        granting = held if narrow_to is None else held & set(narrow_to)
        hits = []
        for doc_id, (acl, public, deny) in DOCS.items():
            if held & set(deny):
                continue  # deny is checked against every held principal, whatever the narrowing
            if public or set(acl) & granting:
                scores = {"dense": 0.5, "keyword": 1.5, "fused": 0.03}
                hits.append(Hit(doc_id, f"{doc_id}#0", f"text of {doc_id}", 0.03, 0, 10, scores=scores))
        return hits[:top_k]


def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    entries = [
        {"id": "support-bot", "hash": hash_api_key(SUPPORT_KEY), "principals": ["group:support"]},
        {"id": "sales-bot", "hash": hash_api_key(SALES_KEY), "principals": ["group:sales", "user:bob"]},
        {"id": "nobody", "hash": hash_api_key(EMPTY_KEY), "principals": []},
    ]
    path.write_text(yaml.safe_dump({"keys": entries}), encoding="utf-8")
    return path


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("CJK_TEST_JWT", SECRET)
    settings = ServiceSettings(
        api_keys_file=keys_file(tmp_path),
        jwt=JwtSettings(secret_env="CJK_TEST_JWT", issuer="https://idp.test", audience="cjkrag", leeway_s=0),
        max_top_k=20,
        max_request_bytes=4096,
    )
    with TestClient(create_app(engine, settings)) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def doc_ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {hit["doc_id"] for hit in response.json()["hits"]}


def test_fake_engine_satisfies_the_protocol(engine: FakeEngine) -> None:
    assert isinstance(engine, EngineLike)


def test_two_keys_see_only_their_own_documents(client: TestClient, engine: FakeEngine) -> None:
    support = client.post("/v1/search", json={"query": "返品"}, headers=bearer(SUPPORT_KEY))
    sales = client.post("/v1/search", json={"query": "売上"}, headers=bearer(SALES_KEY))
    assert doc_ids(support) == {"support-faq", "welcome"}
    assert doc_ids(sales) == {"sales-plan", "bob-notes", "welcome"}  # not sales-board: bob is denied
    assert engine.calls == [("返品", ("group:support",)), ("売上", ("group:sales", "user:bob"))]
    body = support.json()
    assert body["took_ms"] >= 0
    assert body["hits"][0]["scores"] == {"dense": 0.5, "keyword": 1.5, "fused": 0.03}
    assert support.headers["cache-control"] == "no-store"


def test_body_principals_only_narrow(client: TestClient, engine: FakeEngine) -> None:
    forged = client.post(
        "/v1/search",
        json={"query": "q", "principals": ["group:support", "group:admin"]},
        headers=bearer(SALES_KEY),
    )
    assert doc_ids(forged) == {"welcome"}  # nothing added: the caller holds neither
    narrowed = client.post(
        "/v1/search",
        json={"query": "q", "principals": ["user:bob", "group:support"]},
        headers=bearer(SALES_KEY),
    )
    assert doc_ids(narrowed) == {"bob-notes", "welcome"}
    held = ("group:sales", "user:bob")
    assert [principals for _, principals in engine.calls] == [held, held]  # ALL held principals, always
    assert engine.narrowings == [("group:support", "group:admin"), ("user:bob", "group:support")]


def test_narrowing_never_lifts_a_deny(client: TestClient, engine: FakeEngine) -> None:
    """The key holds group:sales and user:bob; sales-board allows group:sales but denies user:bob."""
    for narrow in (None, ["group:sales"], [], ["group:sales", "group:admin"]):
        body: dict[str, Any] = {"query": "q"} if narrow is None else {"query": "q", "principals": narrow}
        ids = doc_ids(client.post("/v1/search", json=body, headers=bearer(SALES_KEY)))
        assert "sales-board" not in ids, narrow
    assert all(p == ("group:sales", "user:bob") for _, p in engine.calls)


def test_missing_and_invalid_credentials_are_401(client: TestClient, engine: FakeEngine) -> None:
    for headers in ({}, bearer("cjk_wrong"), {"Authorization": f"Basic {SUPPORT_KEY}"}, bearer("a.b.c")):
        response = client.post("/v1/search", json={"query": "q"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json() == {"error": "unauthorized", "detail": "missing or invalid credentials"}
    assert engine.calls == []


def test_key_without_principals_is_403(client: TestClient, engine: FakeEngine) -> None:
    response = client.post("/v1/search", json={"query": "q"}, headers=bearer(EMPTY_KEY))
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    assert engine.calls == []


def jwt_token(**claims: Any) -> str:
    base: dict[str, Any] = {
        "sub": "alice",
        "iss": "https://idp.test",
        "aud": "cjkrag",
        "exp": int(time.time()) + 120,
        "groups": ["sales"],
    }
    key = claims.pop("key", SECRET)
    return jwt.encode({**base, **claims}, key, algorithm="HS256")


def test_jwt_valid_expired_wrong_key_wrong_audience(client: TestClient, engine: FakeEngine) -> None:
    valid = client.post("/v1/search", json={"query": "q"}, headers=bearer(jwt_token()))
    assert doc_ids(valid) == {"sales-plan", "sales-board", "welcome"}
    assert engine.calls == [("q", ("user:alice", "group:sales"))]
    for bad in (
        jwt_token(exp=int(time.time()) - 10),
        jwt_token(key="a-different-secret-0123456789abcdef-xyz"),
        jwt_token(aud="another-service"),
    ):
        response = client.post("/v1/search", json={"query": "q"}, headers=bearer(bad))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert len(engine.calls) == 1


def test_validation_errors(client: TestClient, engine: FakeEngine) -> None:
    headers = bearer(SUPPORT_KEY)
    assert client.post("/v1/search", json={"query": "q", "top_k": 21}, headers=headers).status_code == 422
    assert client.post("/v1/search", json={"query": "q", "top_k": 0}, headers=headers).status_code == 422
    assert client.post("/v1/search", json={"query": "q", "top_k": 20}, headers=headers).status_code == 200
    unknown = client.post("/v1/search", json={"query": "q", "acl": ["group:sales"]}, headers=headers)
    assert unknown.status_code == 422 and "acl" in unknown.text
    assert client.post("/v1/search", json={"query": ""}, headers=headers).status_code == 422
    assert client.post("/v1/search", json={"query": "q" * 2001}, headers=headers).status_code == 422
    assert client.post("/v1/search", json={"query": "q", "mode": "fuzzy"}, headers=headers).status_code == 422
    assert len(engine.calls) == 1


def test_language_overrides_detection_and_is_validated(client: TestClient, engine: FakeEngine) -> None:
    headers = bearer(SUPPORT_KEY)
    assert client.post("/v1/search", json={"query": "東京", "language": "ja-JP"}, headers=headers).status_code == 200
    assert client.post("/v1/search", json={"query": "東京"}, headers=headers).status_code == 200
    assert engine.languages == ["ja", None]
    for bad in ("fr", "japanese!", 3):
        refused = client.post("/v1/search", json={"query": "東京", "language": bad}, headers=headers)
        assert refused.status_code == 422 and "language" in refused.text
    assert len(engine.calls) == 2


def test_request_body_limit_is_413(client: TestClient, engine: FakeEngine) -> None:
    huge = {"query": "q", "filters": {"doc_id": "x" * 10_000}}
    response = client.post("/v1/search", json=huge, headers=bearer(SUPPORT_KEY))
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"query": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    streamed = client.post(
        "/v1/search", content=chunks(), headers={**bearer(SUPPORT_KEY), "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert engine.calls == []


def test_filter_error_is_400_with_message(client: TestClient) -> None:
    response = client.post(
        "/v1/search", json={"query": "q", "filters": {"bogus": 1}}, headers=bearer(SALES_KEY)
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_filter" and "bogus" in response.json()["detail"]


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (StoreUnavailable("milvus down at http://10.0.0.5:19530"), 503, "store_unavailable"),
        (ConfigError("retrieval.mode: unknown mode"), 400, "invalid_request"),
        (RuntimeError("secret internals /srv/data"), 500, "internal_error"),
    ],
)
def test_engine_errors_are_mapped(
    client: TestClient, engine: FakeEngine, error: Exception, status: int, code: str
) -> None:
    engine.fail_with = error
    response = client.post("/v1/search", json={"query": "q"}, headers=bearer(SALES_KEY))
    assert response.status_code == status and response.json()["error"] == code
    if status != 400:
        assert str(error) not in response.text


def test_health_ready_and_docs(client: TestClient, engine: FakeEngine) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    engine.store_up = False
    down = client.get("/readyz")
    assert down.status_code == 503 and "documents" not in down.text and "19530" not in down.text
    assert engine.warm_ups == 1  # once, at startup
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    request_schema = schema["components"]["schemas"]["SearchRequest"]
    assert request_schema["properties"]["top_k"]["maximum"] == 20
    assert request_schema["additionalProperties"] is False


def test_readyz_is_503_until_a_failed_warm_up_succeeds(tmp_path: Path) -> None:
    class FlakyEngine(FakeEngine):
        def warm_up(self) -> None:
            self.warm_ups += 1
            if self.warm_ups == 1:
                raise StoreUnavailable("store not up yet")

    flaky = FlakyEngine()
    settings = ServiceSettings(api_keys_file=keys_file(tmp_path))
    with TestClient(create_app(flaky, settings)) as test_client:
        assert flaky.warm_ups == 1
        assert test_client.get("/readyz").status_code == 200  # retried once, now loaded
        assert test_client.get("/readyz").status_code == 200
    assert flaky.warm_ups == 2


def test_model_error_at_startup_stops_the_app(tmp_path: Path) -> None:
    class Broken(FakeEngine):
        def warm_up(self) -> None:
            raise ModelError("model files missing")

    with (
        pytest.raises(ModelError),
        TestClient(create_app(Broken(), ServiceSettings(api_keys_file=keys_file(tmp_path)))),
    ):
        pass


def test_concurrent_requests_never_mix_principals(client: TestClient, engine: FakeEngine) -> None:
    expected = {
        SUPPORT_KEY: ("group:support",),
        SALES_KEY: ("group:sales", "user:bob"),
    }
    allowed = {SUPPORT_KEY: {"support-faq", "welcome"}, SALES_KEY: {"sales-plan", "bob-notes", "welcome"}}

    def one(i: int) -> tuple[str, set[str]]:
        key = SUPPORT_KEY if i % 2 else SALES_KEY
        response = client.post("/v1/search", json={"query": f"{key}|{i}"}, headers=bearer(key))
        return key, doc_ids(response)

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(96)))
    for key, ids in results:
        assert ids == allowed[key]
    assert len(engine.calls) == 96
    for query, principals in engine.calls:
        assert principals == expected[query.split("|")[0]]


def test_cors_only_when_configured(tmp_path: Path, engine: FakeEngine) -> None:
    settings = ServiceSettings(api_keys_file=keys_file(tmp_path), cors_origins=["https://app.example"])
    with TestClient(create_app(engine, settings)) as cors_client:
        preflight = cors_client.options(
            "/v1/search",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"},
        )  # fmt: skip
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    with TestClient(create_app(engine, ServiceSettings(api_keys_file=keys_file(tmp_path)))) as plain:
        response = plain.get("/healthz", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in response.headers


# ------------------------------------------------------------------------------- insecure-local, startup


def test_insecure_local_app(engine: FakeEngine) -> None:
    settings = ServiceSettings(insecure_local_principals=["group:support"])
    app = create_app(engine, settings, insecure_local=True)
    with TestClient(app, client=("127.0.0.1", 50000)) as local:
        assert doc_ids(local.post("/v1/search", json={"query": "q"})) == {"support-faq", "welcome"}
    with TestClient(app, client=("192.0.2.7", 50000)) as remote:
        assert remote.post("/v1/search", json={"query": "q"}).status_code == 403
    public_only = create_app(engine, ServiceSettings(), insecure_local=True)
    with TestClient(public_only, client=("::1", 50000)) as local:
        assert doc_ids(local.post("/v1/search", json={"query": "q"})) == {"welcome"}
    assert [p for _, p in engine.calls] == [("group:support",), ()]


def test_create_app_without_auth_is_refused(engine: FakeEngine) -> None:
    with pytest.raises(ConfigError, match="no authentication configured"):
        create_app(engine, ServiceSettings())


@pytest.mark.parametrize(("host", "insecure"), [("0.0.0.0", True), ("::", True), ("127.0.0.1", False)])
def test_run_server_refuses_without_auth(host: str, insecure: bool) -> None:
    built: list[int] = []

    def factory() -> EngineLike:
        built.append(1)
        return FakeEngine()

    with pytest.raises(ConfigError, match="refusing to"):
        run_server(factory, ServiceSettings(), host, 8000, insecure)
    assert built == []  # refused before building the engine


def test_run_server_config_errors_before_engine(tmp_path: Path) -> None:
    bad = tmp_path / "keys.yaml"
    bad.write_text(
        yaml.safe_dump({"keys": [{"id": "x", "hash": "plain-key", "principals": []}]}), encoding="utf-8"
    )
    built: list[int] = []

    def factory() -> EngineLike:
        built.append(1)
        return FakeEngine()

    with pytest.raises(ConfigError, match=r"entry 'x' \(#1\)"):
        run_server(factory, ServiceSettings(api_keys_file=bad), "0.0.0.0", 8000, False)
    assert built == []


def test_run_server_hands_the_app_to_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:  # uvicorn.run would block: record instead
        seen.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    engine = FakeEngine()
    run_server(lambda: engine, ServiceSettings(api_keys_file=keys_file(tmp_path)), "0.0.0.0", 8123, False)
    assert (seen["host"], seen["port"], seen["workers"]) == ("0.0.0.0", 8123, 1)
    with TestClient(seen["app"]) as served:
        assert doc_ids(served.post("/v1/search", json={"query": "q"}, headers=bearer(SUPPORT_KEY))) == {
            "support-faq",
            "welcome",
        }
    assert engine.warm_ups == 1
