"""The app's protection and observation layer, wired in one place: authentication and Origin
checks (:mod:`tokenwire.edge.security`), limits (:mod:`tokenwire.edge.limits`) and metrics
(:mod:`tokenwire.edge.metrics`).

:class:`Guards` gives the app its middleware (outermost first: CORS, connection metrics,
security, sizes), its extra routes (``POST /v1/tokens``, ``GET /metrics``) and
:meth:`Guards.scoped`, the stream registry as one connection may use it.
"""

from __future__ import annotations

import json

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from tokenwire.edge.keys import TOKEN_PREFIX
from tokenwire.edge.limits import ConnectionLimiter, LimitsMiddleware, ScopedRegistry, StreamGuard
from tokenwire.edge.metrics import Metrics
from tokenwire.edge.proxy import ForwardedHeaders
from tokenwire.edge.responses import error_response
from tokenwire.edge.security import (
    Authenticator,
    HostCheck,
    HostPolicy,
    OriginPolicy,
    SecurityMiddleware,
    auth_state,
)
from tokenwire.errors import InvalidField, InvalidRequest, TokenwireError, Unauthorized
from tokenwire.settings import Settings
from tokenwire.streams.registry import StreamRegistry


class Guards:
    """Security, limits and metrics of one app (one per process).

    Raises ``ValueError`` at construction for settings that cannot work (see
    :func:`tokenwire.edge.security.check_settings`).
    """

    def __init__(self, settings: Settings, registry: StreamRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.auth = Authenticator(settings)
        self.origins = OriginPolicy(settings.allowed_origins)
        self.metrics = Metrics(provider_stats=registry.provider.stats)
        self.streams = StreamGuard(settings, self.auth, self.metrics)
        self.metrics.live = self.streams.live
        registry.observer = self.metrics  # every generation of the registry reports here
        self.connections = ConnectionLimiter(
            settings.max_ws_connections,
            settings.max_ws_connections_per_key,
            settings.max_ws_unauthenticated,
        )

    def scoped(self, connection: Request | WebSocket) -> ScopedRegistry:
        """The registry as the caller of ``connection`` may use it: stream limits, and its own
        streams only (see :class:`tokenwire.edge.limits.ScopedRegistry`)."""
        return self.streams.scoped(self.registry, connection.scope)

    def routes(self) -> list[Route]:
        routes = [Route("/v1/tokens", self.mint_token, methods=["POST"])]
        if self.settings.metrics:
            routes.append(Route("/metrics", self.metrics.endpoint, methods=["GET"]))
        return routes

    def middleware(self) -> list[Middleware]:
        """Outermost first: forwarded headers of trusted proxies, Host (DNS rebinding), CORS
        (answers preflights; only with an allowlist), Origin + authentication + WebSocket
        connection limits, sizes. (Open connections are counted by the SSE response and the
        WebSocket session themselves, not by a wrapper of every ``send``.)"""
        settings = self.settings
        stack = [
            Middleware(ForwardedHeaders, trusted=settings.forwarded_allow_ips),
            Middleware(HostCheck, policy=HostPolicy.of(settings)),
        ]
        if settings.allowed_origins:
            stack.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=sorted(self.origins.allowed),
                    allow_methods=["GET", "POST", "OPTIONS"],
                    allow_headers=[
                        "Authorization",
                        "Content-Type",
                        "Last-Event-ID",
                        "X-Request-Id",
                    ],
                    expose_headers=["X-Stream-Id", "X-Request-Id", "Retry-After"],
                    max_age=600,
                )
            )
        stack += [
            Middleware(
                SecurityMiddleware,
                authenticator=self.auth,
                origins=self.origins,
                connections=self.connections,
                metrics=self.metrics,
                auth_timeout=settings.auth_timeout,
            ),
            Middleware(
                LimitsMiddleware,
                max_body_size=settings.max_body_size,
                max_message_size=settings.ws_max_message_size,
                messages_per_minute=settings.ws_messages_per_minute,
                send_timeout=settings.send_timeout,
            ),
        ]
        return stack

    async def mint_token(self, request: Request) -> Response:
        """``POST /v1/tokens`` (optional JSON body ``{"ttl": seconds}``, 1 to ``token_ttl``):
        201 ``{token, expires_at, expires_in}``, a signed token for the ``token`` query
        parameter of GET requests and WebSockets (browsers' EventSource and WebSocket cannot
        send headers). Needs an API key, not a token, so that tokens cannot be renewed
        forever. With authentication off the token is minted anyway (and never checked), so
        that browser clients need no special case. Errors: 400/422 ``invalid_request``, 401."""
        try:
            ttl = _requested_ttl(await request.body(), self.settings.token_ttl)
            header = request.headers.get("authorization", "")
            if header.partition(" ")[2].strip().startswith(TOKEN_PREFIX + "."):
                raise Unauthorized("mint tokens with an API key, not with a token")
        except TokenwireError as exc:
            return error_response(exc)
        principal = auth_state(request.scope).principal
        key_id = principal.key_id if principal is not None and principal.key_id else "anonymous"
        token, expires_at = self.auth.signer.mint(key_id, ttl)
        return JSONResponse(
            {"token": token, "expires_at": expires_at, "expires_in": ttl},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )


def _requested_ttl(raw: bytes, limit: float) -> float:
    """The ``ttl`` of a token request body (empty: ``limit``). Raises :class:`InvalidRequest`."""
    if not raw.strip():
        return limit
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    if not isinstance(body, dict) or set(body) - {"ttl"}:
        raise InvalidField("body: expected {'ttl': seconds} or nothing")
    ttl = body.get("ttl", limit)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidField("ttl: must be a number of seconds")
    if not 1 <= ttl <= limit:  # under a second, the token would be minted expired
        raise InvalidField(f"ttl: must be in [1, {limit}] seconds")
    return ttl
