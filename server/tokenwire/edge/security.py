"""Who may talk to the server: API keys, short-lived signed tokens, and the Origin allowlist.

Both transports pass through :class:`SecurityMiddleware` (pure ASGI), before any route runs:

0. ``Host`` (:class:`HostCheck`, just inside :class:`tokenwire.edge.proxy.ForwardedHeaders`):
   a request whose ``Host`` is not served (:class:`HostPolicy`) is refused with 400
   invalid_request (a WebSocket handshake is denied), before the Origin check, whose "same
   origin" trusts ``Host``: a DNS-rebinding page, whose own name now resolves to this server,
   sends Host = Origin = its name. With no ``allowed_hosts``, a server bound to loopback
   answers only the loopback names. The host a trusted proxy forwards is checked against
   ``allowed_hosts`` when that is set.
1. ``Origin``: a browser request (HTTP or WebSocket handshake) whose ``Origin`` is neither the
   server's own origin (scheme and host, as a trusted proxy forwards them, else the request's)
   nor an exact entry of ``allowed_origins`` is refused: HTTP 403, or the WebSocket handshake
   is denied with 403 before accept (cross-site WebSocket hijacking; RFC 6455 section 10.2).
   Requests without an ``Origin`` (curl, SDKs) are not browser requests and pass; so do GET
   requests for the demo page and its static files (``/``, ``/web/...``), which browsers fetch
   with an ``Origin`` (module scripts are CORS requests: WHATWG HTML "fetch a single module
   script", WHATWG Fetch "Origin header") and which hold nothing to protect.
   Starlette's ``CORSMiddleware`` never looks at WebSocket scopes, so this check is our own.
2. Credentials, when authentication is on: ``Authorization: Bearer <API key or signed token>``
   on every route; the signed token also as the ``token`` query parameter on GET requests and the
   WebSocket handshake (browsers' ``EventSource`` and ``WebSocket`` cannot set headers); on a
   WebSocket handshake also as an offered subprotocol (beside ``tokenwire``, which the server
   selects) or the ``tokenwire_token`` cookie; or, on a
   WebSocket that presented nothing, a first message ``{"type": "auth", "token": ...}`` within
   ``auth_timeout`` seconds. Failures: HTTP 401 (``WWW-Authenticate: Bearer``), the WebSocket
   handshake denied with 401 before accept, or close 1008 after a bad or missing ``auth`` message.

Keys and tokens themselves are in :mod:`tokenwire.edge.keys`. Signed tokens are minted by an
authenticated ``POST /v1/tokens``; they live at most ``token_ttl`` seconds and name their key,
which must still be valid when they are used. Query tokens are removed from every log line by
:class:`tokenwire.logs.RedactingFilter` (uvicorn's access log prints the query string).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import secrets
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenwire.edge.keys import (
    ANONYMOUS,
    TOKEN_PREFIX,
    KeyStore,
    Principal,
    TokenSigner,
)
from tokenwire.edge.proxy import forwarded
from tokenwire.edge.responses import deny_websocket, send_error
from tokenwire.errors import ErrorCode, Forbidden, InvalidRequest, TokenwireError, Unauthorized
from tokenwire.lifecycle import route_path, with_request_id
from tokenwire.logs import request_id_var
from tokenwire.protocol.websocket import CloseCode
from tokenwire.settings import Settings, check_trusted

if TYPE_CHECKING:
    from tokenwire.edge.limits import ConnectionLimiter
    from tokenwire.edge.metrics import Metrics

log = logging.getLogger("tokenwire.edge.security")

PUBLIC_PATHS = frozenset({"/healthz", "/", "/aisdk"})  # never behind auth: liveness, the pages
PUBLIC_PREFIXES = ("/web/",)  # the demo pages' static files (no secrets; their streams need auth)
STATIC_PATHS = frozenset({"/", "/aisdk"})  # with PUBLIC_PREFIXES: GET needs no Origin match
REQUEST_ID_HEADER = "x-request-id"
TOKEN_COOKIE = "tokenwire_token"  # a signed token for WebSocket handshakes (see below)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# -- origins ----------------------------------------------------------------------------------


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without a default port or trailing slash.

    Raises ``ValueError`` for anything that is not an origin (a path, a wildcard, no scheme).
    """
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or "*" in origin:
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"an origin has no path, query or user: {origin!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    port = parts.port
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class OriginPolicy:
    """Exact-match Origin allowlist; the server's own origin (from ``Host``) is always allowed.

    No wildcards and no substring or suffix matching: ``https://app.example.com`` does not
    allow ``https://app.example.com.evil.net`` nor ``https://evil-app.example.com``.
    """

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = frozenset(normalize_origin(origin) for origin in allowed)

    def allows(self, origin: str | None, scope: Scope) -> bool:
        """Whether a request with this ``Origin`` header value may proceed."""
        if origin is None:
            return True  # not sent by a browser: CSRF and CSWSH need a browser
        try:
            normalized = normalize_origin(origin)
        except ValueError:
            return False  # "null" (sandboxed frames, file://) and garbage
        return normalized in self.allowed or normalized == own_origin(scope)


def own_origin(scope: Scope) -> str | None:
    """This server's origin as the client addressed it: the scheme and host a trusted proxy
    forwarded (:mod:`tokenwire.edge.proxy`), else the connection's scheme and ``Host``."""
    host = forwarded(scope).host or Headers(scope=scope).get("host")
    if not host:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope["scheme"])
    try:
        return normalize_origin(f"{scheme}://{host}")
    except ValueError:
        return None


# -- hosts ------------------------------------------------------------------------------------

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_name(host: str) -> str:
    """The name of a ``Host`` value, without its port or IPv6 brackets, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def check_host_patterns(patterns: list[str]) -> list[str]:
    """``allowed_hosts`` entries, once each is a name, ``*.`` and a domain, or ``*``.
    Raises ``ValueError`` naming the first bad entry."""
    for pattern in patterns:
        rest = pattern.removeprefix("*.")
        if pattern != "*" and ("*" in rest or not rest):
            raise ValueError(
                f"TOKENWIRE_ALLOWED_HOSTS: a host pattern is a name, *.domain or *: {pattern!r}"
            )
    return [host_name(p) if "*" not in p else p.lower() for p in patterns]


def _matches(name: str, patterns: list[str]) -> bool:
    return any(
        p == "*" or name == p or (p.startswith("*.") and name.endswith(p[1:])) for p in patterns
    )


class HostPolicy:
    """Which ``Host`` values are served (DNS rebinding), as Starlette's
    ``TrustedHostMiddleware`` patterns: exact names, ``*.example.com``, or ``*``.

    - The request's own ``Host`` must match ``allowed_hosts``, or be a loopback name when the
      server is bound to loopback; with no ``allowed_hosts`` and another bind, any host is.
      A loopback name is always served on a loopback bind: a rebinding page's requests carry
      its own name, and a proxy's ``proxy_pass http://127.0.0.1:8000`` sends that address.
    - The host a trusted proxy forwards must match ``allowed_hosts`` when it is set; when it is
      not, the proxy chose what it serves (its ``server_name``).
    """

    def __init__(self, allowed: list[str], *, loopback_bind: bool) -> None:
        self.allowed = check_host_patterns(allowed)
        own = list(self.allowed) + (list(LOOPBACK_HOSTS) if loopback_bind else [])
        self.own = own if own else ["*"]

    @classmethod
    def of(cls, settings: Settings) -> HostPolicy:
        return cls(settings.allowed_hosts, loopback_bind=is_loopback(settings.host))

    def refusal(self, host: str | None, forwarded_host: str | None) -> str | None:
        """Why a request with this ``Host`` (and host forwarded by a trusted proxy) is not
        served, or ``None`` when it is."""
        if not _matches(host_name(host or ""), self.own):
            return (
                f"Host {(host or '')[:80]!r} is not served here; list it in "
                "TOKENWIRE_ALLOWED_HOSTS (allowed_hosts)"
            )
        if (
            forwarded_host
            and self.allowed
            and not _matches(host_name(forwarded_host), self.allowed)
        ):
            return (
                f"the forwarded host {forwarded_host[:80]!r} is not served here; list it in "
                "TOKENWIRE_ALLOWED_HOSTS (allowed_hosts)"
            )
        return None


class HostCheck:
    """Pure ASGI middleware: a request whose host :class:`HostPolicy` refuses gets 400
    invalid_request (a WebSocket handshake is denied; see :mod:`tokenwire.edge.responses`)."""

    def __init__(self, app: ASGIApp, *, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host")
            reason = self.policy.refusal(host, forwarded(scope).host)
            if reason is not None:
                error = InvalidRequest(reason)
                if scope["type"] == "websocket":
                    await deny_websocket(scope, send, error)
                else:
                    await send_error(send, error, scope["path"])
                return
        await self.app(scope, receive, send)


# -- the authenticator ------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: Settings) -> None:
    """Fail fast on security settings that cannot work: a malformed ``allowed_origins``
    entry, an unreadable or invalid ``api_keys_file``, ``auth=required`` without keys.

    Raises ``ValueError`` naming the problem (never a key)."""
    OriginPolicy(settings.allowed_origins)
    check_host_patterns(settings.allowed_hosts)
    check_trusted(settings.forwarded_allow_ips)
    keys = KeyStore([key.get_secret_value() for key in settings.api_keys], settings.api_keys_file)
    if settings.auth == "required" and not keys.configured:
        raise ValueError("auth=required but neither api_keys nor api_keys_file is set")


class Authenticator:
    """Checks credentials against the :class:`KeyStore` and the :class:`TokenSigner`.

    ``enabled`` follows ``settings.auth``: ``auto`` is on once any key source is configured,
    ``required`` refuses to build without one (``ValueError``), ``off`` never checks.
    """

    def __init__(self, settings: Settings) -> None:
        self.keys = KeyStore(
            [key.get_secret_value() for key in settings.api_keys], settings.api_keys_file
        )
        if settings.auth == "required" and not self.keys.configured:
            raise ValueError("auth=required but neither api_keys nor api_keys_file is set")
        self.enabled = settings.auth != "off" and self.keys.configured
        secret = settings.token_secret
        self.signer = TokenSigner(
            secret.get_secret_value().encode() if secret else secrets.token_bytes(32)
        )
        self.token_ttl = settings.token_ttl
        if not self.enabled and not is_loopback(settings.host):
            log.warning(
                "AUTHENTICATION IS OFF on a non-loopback address: anyone who can reach "
                "%s:%s can run generations. Set TOKENWIRE_API_KEYS or TOKENWIRE_API_KEYS_FILE.",
                settings.host,
                settings.port,
            )

    def authenticate(self, credential: str) -> Principal:
        """The principal of an API key or signed token. Raises :class:`Unauthorized`."""
        if credential.startswith(TOKEN_PREFIX + "."):
            key_id = self.signer.verify(credential)
            principal = self.keys.by_id(key_id)
            if principal is None:
                raise Unauthorized("the token's API key was revoked")
            return principal
        principal = self.keys.lookup(credential)
        if principal is None:
            raise Unauthorized("unknown or revoked API key")
        return principal

    def still_valid(self, principal: Principal) -> bool:
        """Whether the key of an authenticated principal has not been revoked since."""
        if not self.enabled or principal.key_id is None:
            return True
        return self.keys.by_id(principal.key_id) is not None

    def credential_of(self, scope: Scope) -> str | None:
        """The bearer credential of a request: the ``Authorization`` header, else (GET and
        WebSocket only) the ``token`` query parameter. Raises :class:`Unauthorized` for a
        non-Bearer ``Authorization`` header."""
        header = Headers(scope=scope).get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("Authorization must be 'Bearer <API key or token>'")
            return value.strip()
        if scope["type"] == "websocket" or scope.get("method") == "GET":
            query: str = scope.get("query_string", b"").decode("latin-1")
            for name, value in parse_qsl(query):
                if name == "token":
                    if not value.startswith(TOKEN_PREFIX + "."):
                        raise Unauthorized("the token query parameter takes a signed token")
                    return value
        if scope["type"] == "websocket":
            return _handshake_token(scope)
        return None


def _handshake_token(scope: Scope) -> str | None:
    """A signed token that a browser's WebSocket handshake carries where a page can put one
    (the AI SDK's ``WebSocketChatTransport`` reference, "Authentication and Deployment":
    "secure cookies, short-lived query tokens, or subprotocols"): an offered subprotocol that
    is a token (offered beside :data:`~tokenwire.protocol.websocket.SUBPROTOCOL`, which the
    server selects, so the token is never echoed), else the :data:`TOKEN_COOKIE` cookie. Only
    signed tokens, never API keys; a cookie is read on WebSocket handshakes only, whose Origin
    is always checked first (no cross-site use of the cookie)."""
    for offered in scope.get("subprotocols") or ():
        if offered.startswith(TOKEN_PREFIX + "."):
            return str(offered)
    cookie = Headers(scope=scope).get("cookie")
    if cookie:
        jar = SimpleCookie()
        try:
            jar.load(cookie)
        except CookieError:
            return None
        morsel = jar.get(TOKEN_COOKIE)
        if morsel is not None and morsel.value:
            if not morsel.value.startswith(TOKEN_PREFIX + "."):
                raise Unauthorized(f"the {TOKEN_COOKIE} cookie takes a signed token")
            return morsel.value
    return None


@dataclass
class AuthState:
    """Per-connection authentication result, in ``scope["tokenwire.auth"]``; a WebSocket
    that authenticates with its first message fills ``principal`` in later."""

    principal: Principal | None = None


def auth_state(scope: Scope) -> AuthState:
    """The connection's :class:`AuthState` (anonymous when the middleware did not run)."""
    state = scope.get("tokenwire.auth")
    return state if isinstance(state, AuthState) else AuthState(ANONYMOUS)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


# -- the middleware ---------------------------------------------------------------------------


class SecurityMiddleware:
    """Request id, Origin check, authentication and WebSocket connection limits.

    Puts an :class:`AuthState` in ``scope["tokenwire.auth"]`` and the request id (the client's
    ``X-Request-Id`` when well-formed, else a new one) in :data:`request_id_var`, from where
    :class:`tokenwire.logs.RequestIdFilter` adds it to every log record; HTTP answers echo
    ``X-Request-Id``.

    WebSocket connections over ``max_ws_connections`` (per process) or
    ``max_ws_connections_per_key`` are accepted and closed at once with 1013 (try again later),
    so that browsers, which never see a refused handshake's status, learn why. A socket that
    authenticates with its first message holds one of ``max_ws_unauthenticated`` pre-auth
    slots until then (1013 when they are all taken), and takes its connection slots (or is
    closed 1013) once authenticated.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        origins: OriginPolicy,
        connections: ConnectionLimiter,
        metrics: Metrics,
        auth_timeout: float,
    ) -> None:
        self.app = app
        self.auth = authenticator
        self.origins = origins
        self.connections = connections
        self.metrics = metrics
        self.auth_timeout = auth_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get(REQUEST_ID_HEADER)
        request_id = given if given and _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        token = request_id_var.set(request_id)
        try:
            if scope["type"] == "http":
                await self._http(scope, headers, receive, with_request_id(send, request_id))
            else:
                await self._websocket(scope, headers, receive, send)
        finally:
            request_id_var.reset(token)

    async def _http(self, scope: Scope, headers: Headers, receive: Receive, send: Send) -> None:
        try:
            scope["tokenwire.auth"] = self._check(scope, headers)
        except TokenwireError as exc:
            self.refused(scope, exc)
            await send_error(send, exc, route_path(scope))
            return
        await self.app(scope, receive, send)

    async def _websocket(
        self, scope: Scope, headers: Headers, receive: Receive, send: Send
    ) -> None:
        try:
            state = self._check(scope, headers)
        except TokenwireError as exc:
            self.refused(scope, exc)
            await deny_websocket(scope, send, exc)
            return
        scope["tokenwire.auth"] = state
        slots = _Slots(self.connections)
        try:
            try:
                if state.principal is None:  # a pre-auth slot until its auth message
                    slots.take_pending()
                else:
                    slots.take_server()
                    if state.principal.key_id is not None:
                        slots.take_key(state.principal.key_id)
            except TokenwireError as exc:
                self.refused(scope, exc)
                await _accept_and_close(receive, send, CloseCode.TRY_AGAIN_LATER, exc.message)
                return
            if state.principal is None:  # authenticates with its first message
                receive = _FirstMessageAuth(self, scope, state, slots, receive, send).receive
            await self.app(scope, receive, send)
        finally:
            slots.release()

    def _check(self, scope: Scope, headers: Headers) -> AuthState:
        path = route_path(scope)  # inside a mount too: /llm/healthz -> /healthz
        origin = headers.get("origin")
        static = scope.get("method") in ("GET", "HEAD") and (
            path in STATIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        )
        if not static and not self.origins.allows(origin, scope):
            raise Forbidden(
                f"the Origin {str(origin)[:100]!r} is not allowed: this server's origin is "
                f"{own_origin(scope)!r} (see allowed_origins; behind a proxy, it must forward "
                "X-Forwarded-Host with the port and X-Forwarded-Proto, see forwarded_allow_ips)"
            )
        if not self.auth.enabled or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return AuthState(ANONYMOUS)
        credential = self.auth.credential_of(scope)
        if credential is None:
            if scope["type"] == "websocket":
                return AuthState(None)
            raise Unauthorized("missing credentials: send 'Authorization: Bearer <API key>'")
        return AuthState(self.auth.authenticate(credential))

    def refused(self, scope: Scope, exc: TokenwireError) -> None:
        """Count and log a refusal (never the credential; the path without its query)."""
        self.metrics.refused(str(exc.code), scope["type"])
        log.warning(
            "request refused",
            extra={
                "code": str(exc.code),
                "reason": exc.message,
                "path": scope["path"],
                "client": _client(scope),
            },
        )


class _Slots:
    """The WebSocket connection slots one socket holds: a pre-auth slot until it has
    authenticated, then the server's and its key's."""

    def __init__(self, connections: ConnectionLimiter) -> None:
        self._connections = connections
        self._held: list[str | None] = []
        self._pending = False

    def take_pending(self) -> None:
        self._connections.acquire_pending()
        self._pending = True

    def authenticated(self, key_id: str | None) -> None:
        """Trade the pre-auth slot for the server's and the key's. Raises
        :class:`RateLimited` (the socket then holds nothing more than before)."""
        self.take_server()
        if key_id is not None:
            self.take_key(key_id)
        if self._pending:
            self._pending = False
            self._connections.release_pending()

    def take_server(self) -> None:
        self._connections.acquire(None, per_key=False)
        self._held.append(None)

    def take_key(self, key_id: str) -> None:
        self._connections.acquire(key_id, per_key=True)
        self._held.append(key_id)

    def release(self) -> None:
        for key_id in self._held:
            self._connections.release(key_id, per_key=key_id is not None)
        self._held.clear()
        if self._pending:
            self._pending = False
            self._connections.release_pending()


async def _accept_and_close(receive: Receive, send: Send, code: int, reason: str) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


class _FirstMessageAuth:
    """Wraps a WebSocket's ``receive``: after accept, the first client message must be
    ``{"type": "auth", "token": <API key or signed token>}`` within ``auth_timeout`` seconds;
    otherwise the socket is closed with 1008 (or 1013 when the key is at its connection
    limit) and the app sees a disconnect. The auth message itself never reaches the app."""

    def __init__(
        self,
        middleware: SecurityMiddleware,
        scope: Scope,
        state: AuthState,
        slots: _Slots,
        receive: Receive,
        send: Send,
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.state = state
        self.slots = slots
        self._receive = receive
        self._send = send
        self._connected = False
        self._closed: Message | None = None

    async def receive(self) -> Message:
        if self._closed is not None:
            return self._closed
        if self.state.principal is not None or not self._connected:
            message = await self._receive()
            self._connected = self._connected or message["type"] == "websocket.connect"
            return message
        timeout = self.middleware.auth_timeout
        try:
            async with asyncio.timeout(timeout):
                message = await self._receive()
        except TimeoutError:
            return await self._fail(Unauthorized(f"no auth message within {timeout} s"))
        if message["type"] != "websocket.receive":
            return message  # a disconnect
        try:
            principal = self._authenticate(message)
            self.slots.authenticated(principal.key_id)
        except TokenwireError as exc:
            return await self._fail(exc)
        self.state.principal = principal
        return await self._receive()

    def _authenticate(self, message: Message) -> Principal:
        data = message.get("text")
        if data is None:
            data = (message.get("bytes") or b"").decode("utf-8", "replace")
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse
            parsed = None
        if not isinstance(parsed, dict) or parsed.get("type") != "auth":
            raise Unauthorized("authenticate first: {'type': 'auth', 'token': ...}")
        credential = parsed.get("token")
        if not isinstance(credential, str) or not credential:
            raise Unauthorized("the auth message has no token")
        return self.middleware.auth.authenticate(credential)

    async def _fail(self, exc: TokenwireError) -> Message:
        self.middleware.refused(self.scope, exc)
        code = (
            CloseCode.TRY_AGAIN_LATER
            if exc.code is ErrorCode.RATE_LIMITED
            else CloseCode.POLICY_VIOLATION
        )
        reason = f"{exc.code}: {exc.message}"[:120]
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, RuntimeError):
            pass  # the peer is gone already
        self._closed = {"type": "websocket.disconnect", "code": code}
        return self._closed
