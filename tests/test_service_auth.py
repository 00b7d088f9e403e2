"""cjkrag.service.auth: keys file (hashes only), API-key and JWT verification, principal mapping."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from cjkrag.connectors.filters import validate_principal
from cjkrag.errors import ConfigError
from cjkrag.service.auth import (
    Authenticator,
    FailureLimiter,
    Forbidden,
    JwtVerifier,
    TooManyFailures,
    Unauthenticated,
    generate_api_key,
    hash_api_key,
    is_loopback_host,
    load_api_keys,
)
from cjkrag.service.schemas import JwtSettings, ServiceSettings

SECRET = "s3cret-for-tests-0123456789abcdef-0123456789"  # >= 32 bytes
OTHER_SECRET = "another-secret-0123456789abcdef-0123456789"
ISS, AUD = "https://idp.test", "cjkrag"


def write_keys(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"keys": entries}), encoding="utf-8")
    return path


def token(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256") -> str:
    """A JWT with the configured ``iss``/``aud`` unless ``claims`` sets (or removes, with None) them."""
    full = {k: v for k, v in {"iss": ISS, "aud": AUD, **claims}.items() if v is not None}
    return jwt.encode(full, key, algorithm=alg)


def hs_verifier(**overrides: Any) -> JwtVerifier:
    settings = JwtSettings(secret_env="CJK_TEST_SECRET", **{"issuer": ISS, "audience": AUD, **overrides})
    return JwtVerifier.from_settings(settings, environ={"CJK_TEST_SECRET": SECRET})


# --------------------------------------------------------------------------------------------- hashing


def test_generated_key_verifies_against_its_hash_only(tmp_path: Path) -> None:
    key, digest = generate_api_key()
    other_key, _ = generate_api_key()
    assert key != other_key and key not in digest
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    auth = Authenticator([e for e in load_api_keys(write_keys(tmp_path / "k.yaml", [
        {"id": "bot", "hash": digest, "principals": ["user:bot"]}])
    )])  # fmt: skip
    assert auth.authenticate(key).principals == ("user:bot",)
    with pytest.raises(Unauthenticated):
        auth.authenticate(other_key)


def test_pbkdf2_hash_round_trip_and_cache(tmp_path: Path) -> None:
    human = "cjk_ops00001_correct horse"
    digest = hash_api_key(human, scheme="pbkdf2_sha256", iterations=2000)
    assert digest.startswith("pbkdf2_sha256$2000$")
    assert hash_api_key(human, scheme="pbkdf2_sha256", iterations=2000) != digest  # salted
    path = write_keys(tmp_path / "k.yaml", [
        {"id": "generated", "hash": hash_api_key("other"), "principals": ["user:other"]},
        {"id": "human", "key_id": "ops00001", "hash": digest, "principals": ["group:ops"]},
    ])  # fmt: skip
    auth = Authenticator(load_api_keys(path))
    for _ in range(2):  # second time from the success cache
        caller = auth.authenticate(human)
        assert (caller.id, caller.principals, caller.method) == ("human", ("group:ops",), "api_key")
    with pytest.raises(Unauthenticated):
        auth.authenticate(human + "!")


def test_hash_api_key_rejects_empty_key() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_api_key("")


# ------------------------------------------------------------------------------------------- keys file


def test_keys_file_yaml_and_json(tmp_path: Path) -> None:
    entries = [
        {"id": "a", "hash": hash_api_key("key-a"), "principals": ["group:support", "group:support"]},
        {"id": "b", "hash": hash_api_key("key-b"), "principals": ["user:b"], "description": "bot"},
    ]
    from_yaml = load_api_keys(write_keys(tmp_path / "k.yaml", entries))
    json_path = tmp_path / "k.json"
    json_path.write_text(json.dumps(entries), encoding="utf-8")  # a bare list is accepted too
    from_json = load_api_keys(json_path)
    assert from_yaml == from_json
    assert [(e.id, e.principals) for e in from_yaml] == [("a", ("group:support",)), ("b", ("user:b",))]


def test_plaintext_hash_is_refused_without_echoing_it(tmp_path: Path) -> None:
    plaintext = "cjk_THIS-IS-A-PLAINTEXT-KEY"
    path = write_keys(tmp_path / "keys.yaml", [
        {"id": "ok", "hash": hash_api_key("x"), "principals": ["user:x"]},
        {"id": "support-bot", "hash": plaintext, "principals": ["group:support"]},
    ])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_api_keys(path)
    message = str(info.value)
    assert str(path) in message and "'support-bot'" in message and "#2" in message and "hash" in message
    assert plaintext not in message


@pytest.mark.parametrize("field", ["key", "api_key", "secret"])
def test_plaintext_key_field_is_refused(tmp_path: Path, field: str) -> None:
    path = write_keys(tmp_path / "keys.yaml", [{"id": "bot", field: "abc", "principals": ["user:x"]}])
    with pytest.raises(ConfigError, match=rf"entry 'bot' \(#1\): field '{field}' looks like a plaintext key"):
        load_api_keys(path)


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([{"hash": hash_api_key("a"), "principals": []}], "field 'id' is missing"),
        ([{"id": "a", "hash": hash_api_key("a"), "principals": "user:a"}], "must be a list"),
        ([{"id": "a", "hash": hash_api_key("a"), "principals": ["user:a\nb"]}], "control character"),
        ([{"id": "a", "hash": hash_api_key("a"), "principals": [""]}], "field 'principals': principal '' is empty"),
        ([{"id": "a", "hash": hash_api_key("a"), "principals": [7]}], "field 'principals': principal 7"),
        ([{"id": "a", "hash": hash_api_key("cjk_abcdef_x", scheme="pbkdf2_sha256", iterations=1000),
           "principals": []}], "needs a 'key_id'"),
        ([{"id": "a", "key_id": "AB", "hash": hash_api_key("a"), "principals": []}], "field 'key_id'"),
        ([{"id": "a", "hash": hash_api_key("a"), "principals": [], "role": "x"}], "unknown field"),
        ([{"id": "a", "hash": hash_api_key("a"), "principals": []},
          {"id": "a", "hash": hash_api_key("b"), "principals": []}], "duplicate id"),
        ([{"id": "a", "hash": hash_api_key("a"), "principals": []},
          {"id": "b", "hash": hash_api_key("a"), "principals": []}], "same hash"),
        ([{"id": "a", "hash": "sha256:" + "A" * 64, "principals": []}], "not a recognized hash"),
    ],
)  # fmt: skip
def test_bad_keys_file_entries(tmp_path: Path, entries: list[dict[str, Any]], fragment: str) -> None:
    path = write_keys(tmp_path / "keys.yaml", entries)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_api_keys(path)
    assert str(path) in str(info.value)


def test_missing_or_malformed_keys_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_api_keys(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("keys: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_api_keys(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("users: []", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown top-level"):
        load_api_keys(wrong)


# -------------------------------------------------------------------------------------- authenticator


def test_missing_wrong_and_principal_less_credentials(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k.yaml", [
        {"id": "empty", "hash": hash_api_key("key-empty"), "principals": []},
        {"id": "full", "hash": hash_api_key("key-full"), "principals": ["user:full"]},
    ])  # fmt: skip
    auth = Authenticator.from_settings(ServiceSettings(api_keys_file=path))
    with pytest.raises(Unauthenticated) as missing:
        auth.authenticate(None)
    assert missing.value.invalid_token is False
    with pytest.raises(Unauthenticated) as wrong:
        auth.authenticate("key-ful")
    assert wrong.value.invalid_token is True
    with pytest.raises(Unauthenticated):
        auth.authenticate("x" * 10_000)
    with pytest.raises(Forbidden):
        auth.authenticate("key-empty")
    assert auth.authenticate("key-full").id == "full"


def test_no_auth_configured_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="api_keys_file"):
        Authenticator.from_settings(ServiceSettings())
    with pytest.raises(ConfigError, match="no authentication configured"):
        Authenticator()


def test_insecure_local_uses_configured_principals_and_loopback_only() -> None:
    settings = ServiceSettings(insecure_local_principals=["group:dev"])
    auth = Authenticator.from_settings(settings, insecure_local=True)
    caller = auth.authenticate(None, "127.0.0.1")
    assert (caller.principals, caller.method) == (("group:dev",), "insecure_local")
    assert (
        Authenticator.from_settings(ServiceSettings(), insecure_local=True)
        .authenticate("ignored", "::1")
        .principals
        == ()
    )
    with pytest.raises(Forbidden):
        auth.authenticate(None, "10.1.2.3")
    with pytest.raises(ConfigError, match="insecure_local_principals"):
        Authenticator.from_settings(ServiceSettings(insecure_local_principals=["a\nb"]), insecure_local=True)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.com", False), ("", False)],
)  # fmt: skip
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("bad", ["", " ", "u" * 257, "user:a\nb", "user:a\r\nb", "user:\x00", "user:\tx", 3, None])
def test_validate_principal_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        validate_principal(bad)


@pytest.mark.parametrize(
    "good",
    ["user:山田太郎", "group:고객지원", 'x" || public == true || "', "a\\b", "\u202eevil", "👩‍💻", "u" * 256],
)
def test_validate_principal_accepts_literal_strings(good: str) -> None:
    assert validate_principal(good) == good  # matched literally downstream, never parsed


# ------------------------------------------------------------------------------------------------ JWT


def test_jwt_maps_principals_sub_and_groups() -> None:
    verifier = hs_verifier(issuer="https://idp.test", audience="cjkrag")
    claims = {"sub": "alice", "groups": ["support", "bad\ngroup"], "principals": ["role:admin"],
              "exp": int(time.time()) + 300, "iss": "https://idp.test", "aud": "cjkrag"}  # fmt: skip
    subject, principals = verifier.principals(token(claims))
    assert subject == "alice"
    assert set(principals) == {"role:admin", "user:alice", "group:support"}  # malformed group dropped


def test_jwt_custom_claims() -> None:
    verifier = hs_verifier(principals_claim="acl", groups_claim=None)
    claims = {"acl": "tenant:acme", "groups": ["ignored"], "exp": int(time.time()) + 60}
    assert verifier.principals(token(claims)) == ("", ("tenant:acme",))


@pytest.mark.parametrize(
    ("claims", "key", "alg"),
    [
        ({"sub": "a", "exp": -3600}, SECRET, "HS256"),  # expired (relative to now, see below)
        ({"sub": "a", "aud": "cjkrag"}, SECRET, "HS256"),  # no exp
        ({"sub": "a", "exp": 300}, OTHER_SECRET, "HS256"),  # wrong key
        ({"sub": "a", "exp": 300, "aud": "other"}, SECRET, "HS256"),  # wrong audience
        ({"sub": "a", "exp": 300, "aud": "cjkrag", "iss": "https://evil"}, SECRET, "HS256"),  # wrong iss
        ({"sub": "a", "exp": 300, "iss": None}, SECRET, "HS256"),  # no iss: required
        ({"sub": "a", "exp": 300, "aud": None}, SECRET, "HS256"),  # no aud: required
        ({"sub": "a", "exp": 300, "aud": "cjkrag"}, SECRET + "x" * 40, "HS512"),  # algorithm not configured
    ],
)
def test_jwt_rejections(claims: dict[str, Any], key: str, alg: str) -> None:
    verifier = hs_verifier(leeway_s=0)
    if "exp" in claims:
        claims = {**claims, "exp": int(time.time()) + claims["exp"]}
    with pytest.raises(Unauthenticated):
        verifier.principals(token(claims, key, alg))


def test_jwt_unsigned_token_is_rejected() -> None:
    unsigned = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, "", algorithm="none")
    with pytest.raises(Unauthenticated):
        hs_verifier().principals(unsigned)


def test_jwt_secret_env_must_be_set_and_long(tmp_path: Path) -> None:
    settings = JwtSettings(secret_env="CJK_NOT_SET", issuer=ISS, audience=AUD)
    with pytest.raises(ConfigError, match="CJK_NOT_SET is not set"):
        JwtVerifier.from_settings(settings, environ={})
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        JwtVerifier.from_settings(settings, environ={"CJK_NOT_SET": "short"})


def test_jwt_settings_refuse_inline_secret_and_mismatched_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"service\.jwt\.secret"):
        ServiceSettings.from_mapping({"jwt": {"secret": "inline!"}}, source="cfg.yaml")
    with pytest.raises(ConfigError, match="needs `secret_env"):
        ServiceSettings.from_mapping({"jwt": {"algorithm": "HS256"}})
    with pytest.raises(ConfigError, match="needs `public_key_file"):
        ServiceSettings.from_mapping({"jwt": {"algorithm": "RS256", "secret_env": "X"}})
    with pytest.raises(ConfigError, match="unsupported JWT algorithm"):
        ServiceSettings.from_mapping({"jwt": {"algorithm": "none", "secret_env": "X"}})
    with pytest.raises(ConfigError, match=r"cfg\.yaml: .*service\.max_top_k"):
        ServiceSettings.from_mapping({"max_top_k": 0}, source="cfg.yaml")
    resolved = ServiceSettings.from_mapping(
        {"api_keys_file": "keys.yaml",
         "jwt": {"algorithm": "ES256", "public_key_file": "pub.pem", "issuer": ISS, "audience": AUD}},
        base_dir=tmp_path,
    )
    assert resolved.api_keys_file == tmp_path / "keys.yaml"
    assert resolved.jwt is not None and resolved.jwt.public_key_file == tmp_path / "pub.pem"


def _rsa_pems() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def test_rs256_public_key_file_and_algorithm_confusion(tmp_path: Path) -> None:
    private_pem, public_pem = _rsa_pems()
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public_pem)
    verifier = JwtVerifier.from_settings(JwtSettings(algorithm="RS256", public_key_file=pub, issuer=ISS, audience=AUD))
    good = token({"sub": "carol", "exp": int(time.time()) + 60}, private_pem, "RS256")
    assert verifier.principals(good) == ("carol", ("user:carol",))
    # an HS256 token "signed" with the public key must not pass (algorithm fixed by config)
    import base64
    import hashlib
    import hmac as _hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 60}).encode())
    sig = b64(_hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(Unauthenticated):
        verifier.principals(f"{head}.{body}.{sig}")
    priv = tmp_path / "priv.pem"
    priv.write_bytes(private_pem)
    with pytest.raises(ConfigError, match="PRIVATE key"):
        JwtVerifier.from_settings(JwtSettings(algorithm="RS256", public_key_file=priv, issuer=ISS, audience=AUD))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        JwtVerifier.from_settings(JwtSettings(algorithm="RS256", public_key_file=junk, issuer=ISS, audience=AUD))


def test_authenticator_tries_api_key_when_a_dotted_token_is_no_jwt(tmp_path: Path) -> None:
    path = write_keys(
        tmp_path / "k.yaml", [{"id": "dotted", "hash": hash_api_key("a.b.c"), "principals": ["user:d"]}]
    )
    auth = Authenticator(load_api_keys(path), hs_verifier())
    assert auth.authenticate("a.b.c").id == "dotted"
    jwt_caller = auth.authenticate(token({"sub": "eve", "exp": int(time.time()) + 60}))
    assert (jwt_caller.id, jwt_caller.principals, jwt_caller.method) == ("jwt:eve", ("user:eve",), "jwt")
    with pytest.raises(Unauthenticated):
        auth.authenticate("x.y.z")


def test_packaged_default_service_section_is_valid() -> None:
    from cjkrag.config import load_config

    settings = ServiceSettings.from_config(load_config().service, source="configs/default.yaml")
    assert settings.auth_configured is False
    assert (settings.max_top_k, settings.max_request_bytes) == (100, 65536)


# ------------------------------------------------- cost of unknown keys, failure rate limit, iss/aud opt-out


def _count_pbkdf2(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import hashlib

    calls: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    return calls


def test_one_request_costs_at_most_one_pbkdf2_derivation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten pbkdf2 entries: an unknown key costs ZERO derivations, a key naming an entry costs ONE."""
    keys = {f"k{i:05d}": f"cjk_k{i:05d}_human password {i}" for i in range(10)}
    entries = [{"id": f"human-{kid}", "key_id": kid, "principals": [f"user:{kid}"],
                "hash": hash_api_key(key, scheme="pbkdf2_sha256", iterations=1000)} for kid, key in keys.items()]
    old_generated = "cjk_" + "Zz_9-" * 8  # an old generated key (token_urlsafe, no key id): sha256 entry
    entries.append({"id": "old", "hash": hash_api_key(old_generated), "principals": ["user:old"]})
    auth = Authenticator(load_api_keys(write_keys(tmp_path / "k.yaml", entries)),
                         limiter=FailureLimiter(per_minute=1e6, burst=10**6))  # fmt: skip
    calls = _count_pbkdf2(monkeypatch)
    for unknown in ("sk-unknown", "cjk_nosuchid_whatever", "cjk_k00003", "x" * 5000, "a.b.c"):
        with pytest.raises(Unauthenticated):
            auth.authenticate(unknown, "10.0.0.1")
    assert calls == []
    with pytest.raises(Unauthenticated):
        auth.authenticate("cjk_k00003_wrong password", "10.0.0.1")  # names an entry: one derivation
    assert len(calls) == 1
    assert auth.authenticate(keys["k00007"], "10.0.0.1").principals == ("user:k00007",)
    assert len(calls) == 2
    assert auth.authenticate(keys["k00007"], "10.0.0.1").id == "human-k00007"  # success cache
    assert auth.authenticate(old_generated, "10.0.0.1").id == "old"  # old sha256 keys still work
    assert len(calls) == 2


def test_generated_keys_embed_a_key_id() -> None:
    from cjkrag.service.auth import key_id_of

    key, _ = generate_api_key()
    kid = key_id_of(key)
    assert kid is not None and key.startswith(f"cjk_{kid}_") and len(kid) == 12
    assert key_id_of("sk-plain") is None


def test_failed_authentications_are_rate_limited_per_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    limiter = FailureLimiter(per_minute=6, burst=3, max_clients=100, clock=lambda: now[0])
    key = "cjk_ops00001_pw"
    entries = [{"id": "ops", "key_id": "ops00001", "principals": ["group:ops"],
                "hash": hash_api_key(key, scheme="pbkdf2_sha256", iterations=1000)}]  # fmt: skip
    auth = Authenticator(load_api_keys(write_keys(tmp_path / "k.yaml", entries)), limiter=limiter)
    calls = _count_pbkdf2(monkeypatch)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            auth.authenticate("cjk_ops00001_guess", "192.0.2.1")
    assert len(calls) == 3
    with pytest.raises(TooManyFailures) as limited:
        auth.authenticate("cjk_ops00001_guess", "192.0.2.1")
    assert limited.value.status_code == 429 and 1 <= limited.value.retry_after_s <= 10
    with pytest.raises(TooManyFailures):  # even the right key waits: no verification at all while limited
        auth.authenticate(key, "192.0.2.1")
    assert len(calls) == 3
    assert auth.authenticate(key, "192.0.2.99").id == "ops"  # another address is not affected
    now[0] += 10  # one failure refilled (6 per minute)
    assert auth.authenticate(key, "192.0.2.1").id == "ops"
    for i in range(500):  # memory stays bounded
        limiter.failed(f"198.51.100.{i}")
    assert len(limiter) == 100


def test_rate_limit_is_429_with_retry_after_over_http(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from cjkrag.service import create_app

    class Engine:
        def search(self, query: str, **kwargs: Any) -> list[Any]:
            return []

        def ready(self) -> dict[str, Any]:
            return {}

        def warm_up(self) -> None:
            pass

    path = write_keys(tmp_path / "k.yaml", [{"id": "a", "hash": hash_api_key("good"), "principals": ["u:a"]}])
    settings = ServiceSettings(api_keys_file=path, auth_failures_per_minute=1, auth_failure_burst=2)
    with TestClient(create_app(Engine(), settings)) as client:
        codes = [client.post("/v1/search", json={"query": "q"}, headers={"Authorization": "Bearer bad"})
                 for _ in range(3)]  # fmt: skip
        assert [r.status_code for r in codes] == [401, 401, 429]
        assert int(codes[2].headers["retry-after"]) >= 1
        assert codes[2].json()["error"] == "too_many_requests"


def test_jwt_issuer_and_audience_are_required_unless_opted_out(caplog: pytest.LogCaptureFixture) -> None:
    for missing_field, given in (("issuer", {"audience": AUD}), ("audience", {"issuer": ISS})):
        with pytest.raises(ConfigError, match=rf"service\.jwt.*`{missing_field}` is required.*verify_{missing_field}: false"):
            ServiceSettings.from_mapping({"jwt": {"secret_env": "X", **given}})
    opted = hs_verifier(issuer=None, audience=None, verify_issuer=False, verify_audience=False)
    assert "verify_issuer is false" in caplog.text and "verify_audience is false" in caplog.text
    claims = {"sub": "a", "exp": int(time.time()) + 60, "iss": None, "aud": None}
    assert opted.principals(token(claims)) == ("a", ("user:a",))
    with pytest.raises(ConfigError, match="`issuer` is set but `verify_issuer: false`"):
        ServiceSettings.from_mapping({"jwt": {"secret_env": "X", "issuer": ISS, "audience": AUD,
                                              "verify_issuer": False}})  # fmt: skip
