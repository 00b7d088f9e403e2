"""Who is calling: bearer API keys (hashes in a keys file) and bearer JWTs (PyJWT, configured key).

A caller's principals come ONLY from its key's entry in the keys file or from the claims of a token
whose signature, ``exp`` (required), ``iss`` and ``aud`` were verified. Nothing in a request body can add one.

Keys file (YAML or JSON), hashes only::

    keys:
      - id: support-bot
        hash: "sha256:<64 hex>"                        # cjkrag keys create / hash_api_key(key)
        principals: [group:support, user:bot]
      - id: legacy
        hash: "pbkdf2_sha256$600000$<salt>$<hex>"      # hash_api_key(key, scheme="pbkdf2_sha256")

      - id: legacy
        key_id: legacy01                              # required with pbkdf2: the key is cjk_legacy01_<secret>
        hash: "pbkdf2_sha256$600000$<salt>$<hex>"      # hash_api_key(key, scheme="pbkdf2_sha256")

``sha256`` is right for keys made by :func:`generate_api_key` (256 random bits: nothing to brute-force); they
are looked up by their digest (one sha256 per request, whatever the number of keys). ``pbkdf2_sha256`` is
for human-chosen keys: such an entry must have a ``key_id`` and its key must be presented as
``cjk_<key_id>_<secret>``, so that one request costs at most ONE pbkdf2 derivation (the entry named by
the key id), never one per stored key. Successful pbkdf2 matches are cached (by sha256 of the key).
Failed authentications are rate-limited per client address (:class:`FailureLimiter`, 429 + Retry-After).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cjkrag.connectors.filters import validate_principal
from cjkrag.errors import AccessError, ConfigError, FilterError, MissingDependency, missing
from cjkrag.service.keys import (  # re-exported: the keys file lives in keys.py
    _SHA256_RE,
    PBKDF2_DEFAULT_ITERATIONS,
    ApiKeyEntry,
    generate_api_key,
    hash_api_key,
    key_id_of,
    load_api_keys,
)
from cjkrag.service.schemas import HMAC_ALGORITHMS, JwtSettings, ServiceSettings

log = logging.getLogger("cjkrag.service.auth")

MAX_TOKEN_CHARS = 8192
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class AuthError(AccessError):
    """Base of the two request-level auth failures (mapped to 401 / 403 by the app)."""

    status_code = 401


class Unauthenticated(AuthError):
    """No credentials, or credentials that do not verify (401, generic message)."""

    status_code = 401

    def __init__(self, message: str, *, invalid_token: bool = True) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token  # False: none given (RFC 6750: no error code then)


class Forbidden(AuthError):
    """Authenticated, but not allowed to search (403, generic message)."""

    status_code = 403


class TooManyFailures(AuthError):
    """Too many failed authentications from this client address (429 with Retry-After)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (what ``--insecure-local`` may bind to / accept)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False



__all__ = ["PBKDF2_DEFAULT_ITERATIONS", "ApiKeyEntry", "generate_api_key", "hash_api_key", "key_id_of", "load_api_keys"]


# ---------------------------------------------------------------------------------------------------- JWT


class JwtVerifier:
    """Verifies bearer JWTs with one configured algorithm and key; maps claims to principals."""

    def __init__(self, settings: JwtSettings, key: Any) -> None:
        self.settings = settings
        self._key = key

    @classmethod
    def from_settings(cls, settings: JwtSettings, environ: Mapping[str, str] | None = None) -> JwtVerifier:
        try:
            import jwt
        except ImportError as exc:
            raise missing("service", "pyjwt") from exc
        env = os.environ if environ is None else environ
        for field in ("issuer", "audience"):
            if not getattr(settings, f"verify_{field}"):
                log.warning(
                    "service.jwt.verify_%s is false: tokens are NOT checked for `%s`; any token signed with "
                    "this key (for any issuer/service) is accepted", field, "iss" if field == "issuer" else "aud"
                )
        alg = settings.algorithm
        key: Any
        if alg in HMAC_ALGORITHMS:
            name = settings.secret_env or ""
            secret = env.get(name, "")
            if not secret:
                raise ConfigError(
                    f"service.jwt.secret_env: environment variable {name} is not set or empty; export the "
                    f"{alg} secret in it (at least {_HMAC_MIN_BYTES[alg]} bytes) before `cjkrag serve`"
                )
            if len(secret.encode("utf-8")) < _HMAC_MIN_BYTES[alg]:
                raise ConfigError(
                    f"service.jwt.secret_env: the secret in {name} is shorter than {_HMAC_MIN_BYTES[alg]} "
                    f"bytes, too weak for {alg}; use e.g. `python -c 'import secrets;print(secrets.token_hex(32))'`"
                )
            key = secret
        else:
            path = settings.public_key_file
            assert path is not None  # guaranteed by JwtSettings
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"service.jwt.public_key_file: cannot read {path}: {exc.strerror or exc}"
                ) from None
            if b"PRIVATE KEY" in pem:
                raise ConfigError(
                    f"service.jwt.public_key_file: {path} holds a PRIVATE key; give the server only the "
                    "public key (e.g. `openssl pkey -in private.pem -pubout -out public.pem`)"
                )
            try:
                key = jwt.get_algorithm_by_name(alg).prepare_key(pem)
            except (
                ValueError,
                TypeError,
                jwt.InvalidKeyError,
                MissingDependency,
                NotImplementedError,
            ) as exc:
                raise ConfigError(
                    f"service.jwt.public_key_file: {path} is not a PEM public key usable with {alg} ({exc})"
                ) from None
        return cls(settings, key)

    def principals(self, token: str) -> tuple[str, tuple[str, ...]]:
        """``(subject, principals)`` of a verified token; raises Unauthenticated for any invalid token."""
        import jwt

        s = self.settings
        require = ["exp"] + (["iss"] if s.verify_issuer else []) + (["aud"] if s.verify_audience else [])
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[s.algorithm],
                audience=s.audience if s.verify_audience else None,
                issuer=s.issuer if s.verify_issuer else None,
                leeway=s.leeway_s,
                options={
                    "require": require,
                    "verify_aud": s.verify_audience,
                    "verify_iss": s.verify_issuer,
                },
            )
        except jwt.PyJWTError as exc:
            log.info("rejected JWT: %s", type(exc).__name__)
            raise Unauthenticated("invalid token") from None
        subject = claims.get("sub")
        found: list[str] = []
        raw = claims.get(s.principals_claim)
        found += _claim_list(raw, s.principals_claim)
        if isinstance(subject, str) and subject:
            found.append(f"user:{subject}")
        if s.groups_claim:
            found += [f"group:{g}" for g in _claim_list(claims.get(s.groups_claim), s.groups_claim)]
        valid: list[str] = []
        for principal in found:
            try:
                valid.append(validate_principal(principal))
            except FilterError:
                log.warning("token for sub=%.64r carries a malformed principal; ignored", subject)
        return (subject if isinstance(subject, str) else ""), tuple(dict.fromkeys(valid))


def _claim_list(value: object, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    log.warning("JWT claim %r is neither a string nor a list of strings; ignored", name)
    return []


# --------------------------------------------------------------------------------------------- Authenticator


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. ``id`` is safe to log (key id, ``jwt:<sub>`` or ``insecure-local``)."""

    id: str
    principals: tuple[str, ...]
    method: Literal["api_key", "jwt", "insecure_local"]


class FailureLimiter:
    """Failed authentications per client address: a token bucket each, in bounded memory.

    Each address may fail ``burst`` times at once, refilled at ``per_minute`` per minute; past that,
    :meth:`check` raises :class:`TooManyFailures` (429 with Retry-After) BEFORE any key is verified, so an
    unauthenticated client cannot burn CPU. At most ``max_clients`` addresses are tracked (least recently
    failed forgotten first). Successful requests are never limited here.
    """

    def __init__(
        self,
        per_minute: float = 30.0,
        burst: int = 20,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def check(self, client: str | None) -> None:
        """Raise TooManyFailures when ``client`` has no failures left."""
        key = client or "-"
        with self._lock:
            if key not in self._buckets:
                return
            now = self._clock()
            tokens = self._tokens(key, now)
        if tokens < 1.0:
            wait = max(1, int((1.0 - tokens) / self.rate + 0.999)) if self.rate > 0 else 3600
            raise TooManyFailures("too many failed authentications", retry_after_s=wait)

    def failed(self, client: str | None) -> None:
        key = client or "-"
        with self._lock:
            now = self._clock()
            tokens = self._tokens(key, now) - 1.0
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class Authenticator:
    """Turns a bearer credential into a :class:`Caller`. Thread-safe; read-only after construction."""

    def __init__(
        self,
        api_keys: Sequence[ApiKeyEntry] = (),
        jwt_verifier: JwtVerifier | None = None,
        *,
        insecure_local_principals: Sequence[str] | None = None,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self._keys = tuple(api_keys)
        self._by_sha256: dict[bytes, ApiKeyEntry] = {}  # sha256 entries by digest
        self._by_key_id: dict[str, ApiKeyEntry] = {}  # pbkdf2 (and any key_id'd) entries by key id
        for entry in self._keys:
            sha = _SHA256_RE.match(entry.hash)
            if sha:
                self._by_sha256[bytes.fromhex(sha.group(1))] = entry
            elif entry.key_id is None:
                raise ConfigError(
                    f"API key entry {entry.id!r}: a pbkdf2_sha256 hash needs a key_id (keys presented as "
                    "cjk_<key_id>_<secret>), so that one request costs at most one derivation"
                )
            if entry.key_id is not None:
                self._by_key_id[entry.key_id] = entry
        self._limiter = limiter if limiter is not None else FailureLimiter()
        self._jwt = jwt_verifier
        self._insecure = (
            None
            if insecure_local_principals is None
            else tuple(validate_principal(p) for p in insecure_local_principals)
        )
        self._verified: dict[bytes, ApiKeyEntry] = {}  # sha256(key) -> pbkdf2 entry, successful matches only
        self._lock = threading.Lock()
        if not self._keys and self._jwt is None and self._insecure is None:
            raise ConfigError(
                "no authentication configured: set service.api_keys_file and/or service.jwt in the config "
                "(or run `cjkrag serve --insecure-local` on a loopback host for local testing)"
            )

    @property
    def insecure_local(self) -> bool:
        return self._insecure is not None

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        *,
        insecure_local: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Authenticator:
        """Load the keys file / JWT key now (startup), so configuration errors stop the server early."""
        keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file is not None else []
        verifier = JwtVerifier.from_settings(settings.jwt, environ) if settings.jwt is not None else None
        insecure: list[str] | None = None
        if not settings.auth_configured:
            if not insecure_local:
                raise ConfigError(
                    "no authentication configured: set service.api_keys_file (create keys with `cjkrag keys "
                    "create`) and/or service.jwt in the config; for local testing only, use --insecure-local "
                    "on a loopback host"
                )
            try:
                insecure = [validate_principal(p) for p in settings.insecure_local_principals]
            except FilterError as exc:
                raise ConfigError(f"service.insecure_local_principals: {exc}") from None
        elif insecure_local:
            log.warning(
                "--insecure-local ignored: authentication is configured, every request needs a credential"
            )
        if settings.api_keys_file is not None and not keys and verifier is None:
            raise ConfigError(f"service.api_keys_file: {settings.api_keys_file} has no keys; add one")
        limiter = FailureLimiter(settings.auth_failures_per_minute, settings.auth_failure_burst)
        return cls(keys, verifier, insecure_local_principals=insecure, limiter=limiter)

    def authenticate(self, token: str | None, client_host: str | None = None) -> Caller:
        """The caller behind a bearer ``token``; raises Unauthenticated (401), Forbidden (403) or
        TooManyFailures (429: this client address failed too often; checked before any verification)."""
        if self._insecure is not None:
            if client_host is None or not is_loopback_host(client_host):
                log.warning("insecure-local mode: refused a request from a non-loopback client")
                raise Forbidden("insecure-local mode accepts loopback clients only")
            return Caller("insecure-local", self._insecure, "insecure_local")
        if not token:
            raise Unauthenticated("missing credentials", invalid_token=False)
        self._limiter.check(client_host)
        try:
            caller = self._verify(token)
        except Unauthenticated:
            self._limiter.failed(client_host)
            raise
        if not caller.principals:
            log.info("caller %s is authenticated but holds no principals", caller.id)
            raise Forbidden("no principals")
        return caller

    def _verify(self, token: str) -> Caller:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("invalid credentials")
        if self._jwt is not None and token.count(".") == 2:
            try:
                subject, principals = self._jwt.principals(token)
                return Caller(f"jwt:{subject[:64]}", principals, "jwt")
            except Unauthenticated:
                if not self._keys:
                    raise
        entry = self._match_key(token) if self._keys else None
        if entry is None:
            log.info("rejected bearer credential (no matching API key)")
            raise Unauthenticated("invalid credentials")
        return Caller(entry.id, entry.principals, "api_key")

    def _match_key(self, key: str) -> ApiKeyEntry | None:
        """The entry of ``key``: sha256 entries by digest; otherwise the ONE entry named by the key id
        embedded in the key (``cjk_<key id>_<secret>``) is verified. At most one pbkdf2 derivation."""
        key_sha = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found = self._by_sha256.get(key_sha)
        if found is not None:
            return found
        with self._lock:
            cached = self._verified.get(key_sha)
        if cached is not None:
            return cached
        key_id = key_id_of(key)
        entry = self._by_key_id.get(key_id) if key_id is not None else None
        if entry is None or entry.hash.startswith("sha256:"):
            return None
        if not entry.matches(key, key_sha):
            return None
        with self._lock:
            if len(self._verified) >= 4096:
                self._verified.clear()
            self._verified[key_sha] = entry
        return entry
