"""API keys and the short-lived signed tokens minted from them. Pure: no I/O but reading the
key file.

API keys are compared by their SHA-256 digest only. They come from ``api_keys`` (plain text,
from the environment) and ``api_keys_file`` (lines ``sha256:<64 hex digits> [name]``, re-read
within a second of a change, so that removing a line revokes a key and every token minted with
it). A key is known in logs and metrics by its ``key_id`` (the first 16 hex digits of its
digest) or its name, never by itself.

Signed tokens are ``twt1.<key_id>.<expiry unix seconds>.<HMAC-SHA256 (RFC 2104)>``, made by
:class:`TokenSigner` for ``POST /v1/tokens``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from tokenwire.errors import Unauthorized

log = logging.getLogger("tokenwire.edge.security")

TOKEN_PREFIX = "twt1"
KEY_PREFIX = "tw_"
_EXPIRY = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also takes "²"


# -- keys -------------------------------------------------------------------------------------


def new_api_key() -> str:
    """A new random API key: ``tw_`` + 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """The hex SHA-256 digest of a key, as stored in an ``api_keys_file``."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_file_line(key: str, name: str | None = None) -> str:
    """The ``api_keys_file`` line of a key: ``sha256:<hex> [name]``."""
    line = f"sha256:{key_digest(key)}"
    return f"{line} {name}" if name else line


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``key_id`` is ``None`` when authentication is off (anonymous)."""

    key_id: str | None
    name: str = "anonymous"


ANONYMOUS = Principal(None)


class KeyStore:
    """The valid API keys, by digest: from settings and from a file re-read when it changes.

    ``reload_interval`` (seconds) bounds how often the file is checked (one ``stat`` call).
    A file that cannot be read or parsed keeps the previous keys and logs the line number.
    """

    def __init__(
        self, keys: list[str], path: Path | None = None, *, reload_interval: float = 1.0
    ) -> None:
        self._static = {key_digest(key): None for key in keys}
        self._path = path
        self._reload_interval = reload_interval
        self._file: dict[str, str | None] = {}
        self._stamp: tuple[int, int] | None = None  # (mtime in ns, size) of the file read
        self._checked = 0.0
        self._by_digest: dict[str, Principal] = {}
        self._by_id: dict[str, Principal] = {}
        self._index()
        if path is not None:
            self._reload(force=True)

    @property
    def configured(self) -> bool:
        """Whether any key source was configured (even a file that is empty right now)."""
        return bool(self._static) or self._path is not None

    def _reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._path is None or (not force and now - self._checked < self._reload_interval):
            return
        self._checked = now
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            text = self._path.read_text()
        except OSError as exc:
            if force:
                raise ValueError(f"api_keys_file: cannot read {self._path}: {exc}") from exc
            log.error("api_keys_file unreadable; keeping the previous keys", extra={"error": exc})
            return
        try:
            self._file = parse_key_file(text)
        except ValueError as exc:
            if force:
                raise
            log.error("api_keys_file invalid; keeping the previous keys", extra={"error": exc})
            return
        self._stamp = stamp
        self._index()
        log.info("api keys loaded", extra={"keys": len(self._file)})

    def _index(self) -> None:
        keys = {**self._static, **self._file}
        self._by_digest = {digest: _principal(digest, name) for digest, name in keys.items()}
        self._by_id = {p.key_id: p for p in self._by_digest.values() if p.key_id is not None}

    def lookup(self, key: str) -> Principal | None:
        """The principal of ``key``, or ``None`` if it is unknown or revoked. Only the key's
        digest is looked up, so the lookup's timing says nothing about the key."""
        self._reload()
        return self._by_digest.get(key_digest(key))

    def by_id(self, key_id: str) -> Principal | None:
        """The principal whose key has this ``key_id`` (not a secret: it is in tokens and
        logs), if the key is still valid."""
        self._reload()
        return self._by_id.get(key_id)


def _principal(digest: str, name: str | None) -> Principal:
    key_id = digest[:16]
    return Principal(key_id, name or f"key_{key_id}")


def parse_key_file(text: str) -> dict[str, str | None]:
    """``{digest: name}`` from the lines of an api_keys_file. Blank lines and ``#`` comments
    are skipped. Raises ``ValueError`` naming the first bad line (never echoing it)."""
    keys: dict[str, str | None] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        digest, _, name = line.partition(" ")
        match = re.fullmatch(r"sha256:([0-9a-f]{64})", digest.lower())
        if match is None:
            raise ValueError(f"api_keys_file line {number}: expected 'sha256:<64 hex> [name]'")
        keys[match.group(1)] = name.strip() or None
    return keys


# -- signed tokens ----------------------------------------------------------------------------


class TokenSigner:
    """Mints and checks ``twt1.<key_id>.<expiry>.<signature>`` tokens (HMAC-SHA256, RFC 2104).

    ``secret``: the signing key; every worker of one deployment needs the same one.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def mint(self, key_id: str, ttl: float, *, now: float | None = None) -> tuple[str, int]:
        """A token for ``key_id`` valid ``ttl`` seconds; returns ``(token, expires_at)`` with
        ``expires_at`` in unix seconds."""
        expires = int((time.time() if now is None else now) + ttl)
        payload = f"{TOKEN_PREFIX}.{key_id}.{expires}"
        return f"{payload}.{self._sign(payload)}", expires

    def verify(self, token: str, *, now: float | None = None) -> str:
        """The ``key_id`` a valid token names. Raises :class:`Unauthorized` (malformed, bad
        signature, or expired)."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_PREFIX or not _EXPIRY.fullmatch(parts[2]):
            raise Unauthorized("malformed token")
        payload = ".".join(parts[:3])
        given = parts[3].encode("utf-8", "replace")
        if not hmac.compare_digest(self._sign(payload).encode(), given):
            raise Unauthorized("invalid token signature")
        if int(parts[2]) <= (time.time() if now is None else now):
            raise Unauthorized("token expired; mint a new one with POST /v1/tokens")
        return parts[1]
