"""API keys: the keys file (hashes only), hashing and generating keys, and presented-key parsing.

Keys file (YAML or JSON), hashes only: see :mod:`cjkrag.service.auth` for the format and why ``sha256``
suits generated keys while human-chosen keys need ``pbkdf2_sha256`` with a ``key_id``. The
:class:`~cjkrag.service.auth.Authenticator` looks entries up; this module only reads and checks them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cjkrag.connectors.filters import validate_principal
from cjkrag.errors import ConfigError, FilterError

log = logging.getLogger("cjkrag.service.auth")

PBKDF2_DEFAULT_ITERATIONS = 600_000
_SHA256_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_PBKDF2_RE = re.compile(r"^pbkdf2_sha256\$([0-9]{1,9})\$([^$\s]{1,256})\$([0-9a-f]{64})$")
_PLAINTEXT_FIELDS = ("key", "api_key", "apikey", "secret", "token", "plaintext", "password")
_ENTRY_FIELDS = ("id", "key_id", "hash", "principals", "description", "created")
_KEY_ID_RE = re.compile(r"^[a-z0-9]{6,32}$")
_PRESENTED_KEY_RE = re.compile(r"^cjk_([a-z0-9]{6,32})_(.+)$", re.DOTALL)



def hash_api_key(
    key: str,
    *,
    scheme: Literal["sha256", "pbkdf2_sha256"] = "sha256",
    iterations: int = PBKDF2_DEFAULT_ITERATIONS,
) -> str:
    """The string to store in the keys file for ``key`` (``sha256:<hex>`` or ``pbkdf2_sha256$...``)."""
    if not key:
        raise ValueError("an API key cannot be empty")
    if scheme == "sha256":
        return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    if scheme == "pbkdf2_sha256":
        salt = secrets.token_hex(16)
        digest = hashlib.pbkdf2_hmac("sha256", key.encode("utf-8"), salt.encode("utf-8"), iterations)
        return f"pbkdf2_sha256${iterations}${salt}${digest.hex()}"
    raise ValueError(f"unknown hash scheme {scheme!r}: use 'sha256' or 'pbkdf2_sha256'")


def generate_api_key() -> tuple[str, str]:
    """A new random API key and its hash: ``(key, hash)``. Show the key once; store only the hash.

    The key is ``cjk_<key id>_<secret>`` (12 hex characters of id, 256 random bits of secret); the id is
    what a ``key_id`` entry field names (needed only for pbkdf2 hashes; sha256 entries are found by digest).
    """
    key = f"cjk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    return key, hash_api_key(key)


def key_id_of(key: str) -> str | None:
    """The key id embedded in a presented key ``cjk_<key id>_<secret>``; None for other keys."""
    match = _PRESENTED_KEY_RE.match(key)
    return match.group(1) if match else None


@dataclass(frozen=True)
class ApiKeyEntry:
    id: str
    hash: str
    principals: tuple[str, ...]
    key_id: str | None = None

    def matches(self, key: str, key_sha256: bytes) -> bool:
        sha = _SHA256_RE.match(self.hash)
        if sha:
            return hmac.compare_digest(bytes.fromhex(sha.group(1)), key_sha256)
        pbkdf2 = _PBKDF2_RE.match(self.hash)
        if pbkdf2 is None:  # impossible after load_api_keys; fail closed
            return False
        iterations, salt, expected = int(pbkdf2.group(1)), pbkdf2.group(2), pbkdf2.group(3)
        digest = hashlib.pbkdf2_hmac("sha256", key.encode("utf-8"), salt.encode("utf-8"), iterations)
        return hmac.compare_digest(digest, bytes.fromhex(expected))


def load_api_keys(path: Path) -> list[ApiKeyEntry]:
    """Read and check a keys file. Any problem -> ConfigError naming the file and the entry."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"service.api_keys_file: cannot read {path}: {exc.strerror or exc}; create it with "
            "`cjkrag keys create` or fix the path"
        ) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON ({exc})") from None
    if isinstance(data, Mapping):
        unknown = set(data) - {"keys"}
        if unknown:
            raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected only `keys:`")
        data = data.get("keys")
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected `keys:` followed by a list of {{id, hash, principals}} entries")
    entries: list[ApiKeyEntry] = []
    seen_ids: set[str] = set()
    seen_hashes: set[str] = set()
    seen_key_ids: set[str] = set()
    for number, raw in enumerate(data, start=1):
        entry = _check_entry(path, number, raw)
        if entry.id in seen_ids:
            raise ConfigError(f"{path}: entry #{number}: duplicate id {entry.id!r}; ids must be unique")
        if entry.hash in seen_hashes:
            raise ConfigError(f"{path}: entry {entry.id!r} (#{number}): same hash as an earlier entry")
        if entry.key_id is not None and entry.key_id in seen_key_ids:
            raise ConfigError(
                f"{path}: entry {entry.id!r} (#{number}): field 'key_id': {entry.key_id!r} is used by an earlier "
                "entry; key ids must be unique"
            )
        seen_ids.add(entry.id)
        seen_hashes.add(entry.hash)
        if entry.key_id is not None:
            seen_key_ids.add(entry.key_id)
        entries.append(entry)
    return entries


def _check_entry(path: Path, number: int, raw: object) -> ApiKeyEntry:
    where = f"{path}: entry #{number}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping {{id, hash, principals}}")
    name = raw.get("id")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(
            f"{where}: field 'id' is missing or empty; give each key a name, e.g. id: support-bot"
        )
    where = f"{path}: entry {name!r} (#{number})"
    plaintext = [f for f in raw if str(f).lower() in _PLAINTEXT_FIELDS]
    if plaintext:
        raise ConfigError(
            f"{where}: field {plaintext[0]!r} looks like a plaintext key; the keys file stores only hashes. "
            "Replace it with `hash:` from `cjkrag keys create` (or cjkrag.service.auth.hash_api_key(key))"
        )
    unknown = [str(f) for f in raw if f not in _ENTRY_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(_ENTRY_FIELDS)}")
    digest = raw.get("hash")
    if not isinstance(digest, str) or not (_SHA256_RE.match(digest) or _PBKDF2_RE.match(digest)):
        # never echo the value: it may be a plaintext key pasted by mistake
        raise ConfigError(
            f"{where}: field 'hash' is not a recognized hash (a plaintext key?). Store only "
            "'sha256:<64 lowercase hex>' or 'pbkdf2_sha256$<iterations>$<salt>$<64 hex>'; generate one with "
            "`cjkrag keys create` or cjkrag.service.auth.hash_api_key(key)"
        )
    pbkdf2 = _PBKDF2_RE.match(digest)
    if pbkdf2 and int(pbkdf2.group(1)) < 1:
        raise ConfigError(f"{where}: field 'hash': pbkdf2 iterations must be at least 1")
    if pbkdf2 and int(pbkdf2.group(1)) < 100_000:
        log.warning("%s: pbkdf2 with only %s iterations; re-hash with hash_api_key()", where, pbkdf2.group(1))
    key_id = raw.get("key_id")
    if key_id is not None and (not isinstance(key_id, str) or not _KEY_ID_RE.match(key_id)):
        raise ConfigError(
            f"{where}: field 'key_id' must be 6..32 lowercase letters or digits (the <key id> of a key "
            "presented as cjk_<key id>_<secret>), e.g. key_id: legacy01"
        )
    if pbkdf2 and key_id is None:
        raise ConfigError(
            f"{where}: a pbkdf2_sha256 hash needs a 'key_id' field, and the client must present the key as "
            "cjk_<key_id>_<secret> (hash that whole string with hash_api_key(key, scheme='pbkdf2_sha256')): "
            "without it every unknown key would cost one pbkdf2 derivation per entry. Or use a generated key "
            "(`cjkrag keys create`, sha256)"
        )
    principals = raw.get("principals")
    if not isinstance(principals, list):
        raise ConfigError(f"{where}: field 'principals' must be a list, e.g. [group:support, user:bot]")
    checked: list[str] = []
    for principal in principals:
        try:
            checked.append(validate_principal(principal))
        except FilterError as exc:
            raise ConfigError(f"{where}: field 'principals': {exc}") from None
    return ApiKeyEntry(id=name, hash=digest, principals=tuple(dict.fromkeys(checked)), key_id=key_id)
