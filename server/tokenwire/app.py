"""``create_app(settings) -> Starlette``: routes and wiring only; the work is in streams/ and
transports/.

Routes (wire protocol v1, see README):
    POST /v1/streams                    SSE of one new stream
    POST /v1/streams/{stream_id}/cancel 202 {stream_id, status}
    GET  /v1/ws                         WebSocket: generate / cancel / ping, streams multiplexed
    POST /v1/chat/completions           OpenAI-compatible, streamed or not
    GET  /v1/models                     OpenAI-compatible model list
    GET  /healthz                       liveness and live stream count (never behind auth)
    POST /v1/tokens                     201 {token, expires_at, expires_in}: a short-lived token
    GET  /metrics                       Prometheus metrics (settings.metrics)

Security, limits and metrics (tokenwire.guards) wrap every route as middleware: Origin
allowlist, API keys or signed tokens, body and message sizes; stream limits and stream
ownership apply through ``TokenwireApp.scoped``.

Errors are JSON, never tracebacks: ``{"error": {"code", "message", "retryable"}}`` on our routes,
OpenAI's ``{"error": {"message", "type", "param", "code"}}`` on the OpenAI-compatible ones.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tokenwire import __version__
from tokenwire.errors import ErrorCode, InvalidRequest, NotFound, TokenwireError
from tokenwire.guards import Guards
from tokenwire.limits import ScopedRegistry, check_request
from tokenwire.logs import configure_logging, install_log_filters
from tokenwire.protocol import openai as oai
from tokenwire.protocol.events import ErrorEvent, FinishReason, StreamEnd, TextDelta
from tokenwire.protocol.requests import GenerateParams, describe_validation_error
from tokenwire.providers import Provider, create_provider
from tokenwire.security import http_headers
from tokenwire.settings import Settings
from tokenwire.streams.registry import StreamRegistry
from tokenwire.transports.base import pump
from tokenwire.transports.sse import EventStreamResponse
from tokenwire.transports.websocket import WebSocketSession

log = logging.getLogger("tokenwire.app")

_STATUS = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.PROVIDER_ERROR: 502,
    ErrorCode.PROVIDER_TIMEOUT: 504,
}


class _ValidationFailed(InvalidRequest):
    """A request body that parsed as JSON but failed validation (HTTP 422)."""


def _status_of(exc: TokenwireError) -> int:
    if isinstance(exc, _ValidationFailed):
        return 422
    return _STATUS.get(exc.code, 500)


def error_response(exc: TokenwireError) -> JSONResponse:
    body = {"error": {"code": str(exc.code), "message": exc.message, "retryable": exc.retryable}}
    return JSONResponse(body, status_code=_status_of(exc), headers=http_headers(exc))


def openai_error_response(exc: TokenwireError) -> JSONResponse:
    return JSONResponse(
        oai.error_body(exc.code, exc.message),
        status_code=_status_of(exc),
        headers=http_headers(exc),
    )


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _ValidationFailed(describe_validation_error(exc)) from exc


class TokenwireApp:
    """The server's state and its route handlers (one per process)."""

    def __init__(self, settings: Settings, provider: Provider) -> None:
        self.settings = settings
        self.provider = provider
        self.registry = StreamRegistry(provider, settings)
        self.started = int(time.time())
        self.guards = Guards(settings, self.registry)  # security, limits, metrics

    def scoped(self, connection: Request | WebSocket) -> ScopedRegistry:
        """The registry as the caller of ``connection`` may use it: stream limits, its own
        streams only (see :class:`tokenwire.limits.ScopedRegistry`)."""
        return self.guards.scoped(connection)

    def limit_params(self, params: GenerateParams) -> GenerateParams:
        """Apply the server's max_tokens default and limit, and the message count and size
        limits. Raises :class:`InvalidRequest`."""
        try:
            check_request(params, self.settings)
        except InvalidRequest as exc:
            raise _ValidationFailed(exc.message) from None
        if params.max_tokens is None:
            return params.model_copy(update={"max_tokens": self.settings.max_tokens})
        if params.max_tokens > self.settings.max_tokens_limit:
            raise _ValidationFailed(
                f"max_tokens: must be <= {self.settings.max_tokens_limit}, got {params.max_tokens}"
            )
        return params

    # -- native routes --------------------------------------------------------------------

    async def create_stream(self, request: Request) -> Response:
        try:
            params = self.limit_params(_validate(GenerateParams, await _json_body(request)))
            generation = self.scoped(request).create(params, transport="sse")
        except TokenwireError as exc:
            return error_response(exc)
        subscription = self.registry.subscribe(generation)
        return EventStreamResponse(  # type: ignore[return-value]
            generation,
            subscription,
            heartbeat_interval=self.settings.heartbeat_interval,
            send_timeout=self.settings.send_timeout,
            headers={"X-Stream-Id": generation.stream_id},
        )

    async def cancel_stream(self, request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        try:
            self.scoped(request).cancel(stream_id)
        except NotFound as exc:
            return error_response(exc)
        return JSONResponse({"stream_id": stream_id, "status": "cancelled"}, status_code=202)

    async def websocket(self, websocket: WebSocket) -> None:
        session = WebSocketSession(
            websocket, self.scoped(websocket), self.settings, limit_params=self.limit_params
        )
        await session.run()

    async def healthz(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "provider": self.provider.name,
                "live_streams": len(self.registry),
            }
        )

    # -- OpenAI-compatible routes ---------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        try:
            body = _validate(oai.ChatCompletionRequest, await _json_body(request))
            params = self.limit_params(body.to_generate_params())
            generation = self.scoped(request).create(params, transport="openai")
        except TokenwireError as exc:
            return openai_error_response(exc)
        completion_id = "chatcmpl-" + secrets.token_urlsafe(18)
        created = int(generation.created)
        subscription = self.registry.subscribe(generation)
        if body.stream:
            encoder = oai.ChunkEncoder(
                completion_id, generation.model, created, include_usage=body.include_usage
            )
            return EventStreamResponse(  # type: ignore[return-value]
                generation,
                subscription,
                encode=encoder.encode_event,
                heartbeat_interval=self.settings.heartbeat_interval,
                send_timeout=self.settings.send_timeout,
            )
        collector = _Collector()
        generation.start()
        try:
            await pump(generation, subscription, collector)
        finally:
            generation.unsubscribe(subscription, "ended" if collector.ended else "disconnected")
        if collector.error is not None:
            error = collector.error
            failure = TokenwireError(error.message, retryable=error.retryable, code=error.code)
            return openai_error_response(failure)
        return JSONResponse(
            oai.completion_body(
                completion_id,
                generation.model,
                created,
                "".join(collector.text),
                str(generation.finish_reason or FinishReason.STOP),
                generation.usage,
            )
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse(oai.models_body(self.provider.models, self.started, "tokenwire"))


class _Collector:
    """A transport that keeps the events of a non-streamed completion in memory."""

    name = "collect"

    def __init__(self) -> None:
        self.text: list[str] = []
        self.error: ErrorEvent | None = None
        self.ended = False

    async def send_events(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, TextDelta):
                self.text.append(event.delta)
            elif isinstance(event, ErrorEvent):
                self.error = event
            elif isinstance(event, StreamEnd):
                self.ended = True

    async def send_heartbeat(self) -> None:
        pass


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_REQUEST
    body = {"error": {"code": str(code), "message": str(exc.detail), "retryable": False}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {"error": {"code": "internal_error", "message": "internal error", "retryable": True}}
    return JSONResponse(body, status_code=500)


def create_app(settings: Settings | None = None, *, provider: Provider | None = None) -> Starlette:
    """Build the ASGI app. ``provider`` overrides the one ``settings.provider`` names (tests).

    The provider is started in the app's lifespan (the local model is loaded then, in a worker
    thread) and closed at shutdown after every live generation was cancelled.
    """
    settings = settings or Settings()
    provider = provider or create_provider(settings)
    state = TokenwireApp(settings, provider)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with provider:
            try:
                yield
            finally:
                await state.registry.aclose()

    routes = [
        Route("/v1/streams", state.create_stream, methods=["POST"]),
        Route("/v1/streams/{stream_id}/cancel", state.cancel_stream, methods=["POST"]),
        WebSocketRoute("/v1/ws", state.websocket),
        Route("/v1/chat/completions", state.chat_completions, methods=["POST"]),
        Route("/v1/models", state.models, methods=["GET"]),
        Route("/healthz", state.healthz, methods=["GET"]),
        *state.guards.routes(),  # POST /v1/tokens, GET /metrics
    ]
    install_log_filters()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        middleware=state.guards.middleware(),
    )
    app.state.tokenwire = state
    return app


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker runs: settings from ``TOKENWIRE_*``;
    also sets up tokenwire's logging (``TOKENWIRE_LOG_FORMAT``)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
