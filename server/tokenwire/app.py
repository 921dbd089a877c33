"""``create_app(settings) -> Starlette``: routes and wiring only; the work is in streams/ and
transports/.

Routes (wire protocol v1, see README):
    POST /v1/streams                    SSE of one new stream; with Accept: application/json,
                                        201 {stream_id, events_url} and the stream runs detached
    GET  /v1/streams/{stream_id}/events SSE attach or resume (Last-Event-ID / last_event_id)
    POST /v1/streams/{stream_id}/cancel 202 {stream_id, status}
    GET  /v1/ws                         WebSocket: generate / cancel / ping, streams multiplexed
    POST /v1/chat/completions           OpenAI-compatible, streamed or not
    GET  /v1/models                     OpenAI-compatible model list
    GET  /healthz                       liveness and live stream count (never behind auth)
    GET  /                              the demo chat page (and /web/* its files; see web.py)
    POST /v1/tokens                     201 {token, expires_at, expires_in}: a short-lived token
    GET  /metrics                       Prometheus metrics (settings.metrics)

Security, limits and metrics (tokenwire.guards) wrap every route as middleware: Origin
allowlist, API keys or signed tokens, body and message sizes; stream limits and stream
ownership apply through ``TokenwireApp.scoped``.

Errors are JSON, never tracebacks: ``{"error": {"code", "message", "retryable"}}`` on our routes,
OpenAI's ``{"error": {"message", "type", "param", "code"}}`` on the OpenAI-compatible ones.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import FrameType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from tokenwire import __version__
from tokenwire.errors import ErrorCode, InvalidRequest, TokenwireError
from tokenwire.guards import Guards
from tokenwire.limits import ScopedRegistry, check_request
from tokenwire.logs import configure_logging, install_log_filters, request_id_var
from tokenwire.protocol import openai as oai
from tokenwire.protocol import sse
from tokenwire.protocol.events import ErrorEvent, FinishReason, StreamEnd, StreamReset, TextDelta
from tokenwire.protocol.requests import GenerateParams, describe_validation_error
from tokenwire.providers import Provider, create_provider
from tokenwire.security import http_headers
from tokenwire.settings import DisconnectPolicy, Settings
from tokenwire.streams.generation import Generation
from tokenwire.streams.log import CursorExpired, StreamLog, UnknownStream, create_stream_log
from tokenwire.streams.registry import Attachment, StreamRegistry
from tokenwire.transports.base import SERVER_SEND, pump
from tokenwire.transports.sse import EventStreamResponse
from tokenwire.transports.websocket import WebSocketSession
from tokenwire.web import web_routes

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
    ErrorCode.UNAVAILABLE: 503,
}


class _ValidationFailed(InvalidRequest):
    """A request body that parsed as JSON but failed validation (HTTP 422)."""


def _status_of(exc: TokenwireError) -> int:
    if isinstance(exc, _ValidationFailed):
        return 422
    return _STATUS.get(exc.code, 500)


def error_response(exc: TokenwireError) -> JSONResponse:
    body = {"error": {"code": str(exc.code), "message": exc.message, "retryable": exc.retryable}}
    status = _status_of(exc)
    headers = http_headers(exc) or ({"Retry-After": "1"} if status == 503 else None)
    return JSONResponse(body, status_code=status, headers=headers)


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

    def __init__(self, settings: Settings, provider: Provider, stream_log: StreamLog) -> None:
        self.settings = settings
        self.provider = provider
        self.stream_log = stream_log
        self.registry = StreamRegistry(provider, settings, stream_log)
        self.started = int(time.time())
        self.retry = round(settings.reconnect_delay * 1000)  # SSE `retry:`, milliseconds
        self.guards = Guards(settings, self.registry)  # security, limits, metrics

    def scoped(self, connection: Request | WebSocket) -> ScopedRegistry:
        """The registry as the caller of ``connection`` may use it: stream limits, its own
        streams only (see :class:`tokenwire.limits.ScopedRegistry`)."""
        return self.guards.scoped(connection)

    def drain(self) -> None:
        """Begin a graceful shutdown (see :meth:`StreamRegistry.drain`)."""
        self.registry.drain()

    def event_stream(
        self, attachment: Attachment, *, start: Generation | None = None, **options: Any
    ) -> EventStreamResponse:
        """The SSE response of ``attachment`` with the server's timeouts and ``retry:``."""
        return EventStreamResponse(
            attachment,
            start=start,
            heartbeat_interval=self.settings.heartbeat_interval,
            send_timeout=self.settings.send_timeout,
            write_delay=self.settings.write_delay,
            draining=self.registry.draining,
            connections=self.guards.metrics.connections_open.labels("sse"),
            **options,
        )

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
        detached = _wants_json(request.headers.get("accept", ""))
        try:
            params = self.limit_params(_validate(GenerateParams, await _json_body(request)))
            if detached and params.on_disconnect == DisconnectPolicy.CANCEL:
                raise _ValidationFailed(
                    "on_disconnect: a detached stream (Accept: application/json) must use detach"
                )
            generation = self.scoped(request).create(
                params,
                transport="sse",
                request_id=request_id_var.get(),  # the response's X-Request-Id
                on_disconnect=DisconnectPolicy.DETACH if detached else None,
            )
        except TokenwireError as exc:
            return error_response(exc)
        if detached:
            generation.start()
            events_url = str(request.url_for("stream_events", stream_id=generation.stream_id))
            return JSONResponse(
                {"stream_id": generation.stream_id, "events_url": events_url},
                status_code=201,
                headers={"Location": events_url},
            )
        return self.event_stream(  # type: ignore[return-value]
            self.registry.attach(generation),
            start=generation,
            retry=self.retry,
            headers={"X-Stream-Id": generation.stream_id},
        )

    async def stream_events(self, request: Request) -> Response:
        """Attach to, or resume, a stream over SSE (EventSource-compatible): the cursor is the
        ``Last-Event-ID`` header (sent by a browser's automatic reconnect, so it wins) or the
        ``last_event_id`` query parameter; none means from the start. A stream that has ended
        at the cursor answers 204, which makes an EventSource stop reconnecting (WHATWG HTML,
        9.2.3); an unknown stream or expired cursor answers ``stream.reset``."""
        stream_id = request.path_params["stream_id"]
        raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        try:
            after_seq = _cursor(raw)
            attachment = await self.scoped(request).resume(stream_id, after_seq)
        except (UnknownStream, CursorExpired) as exc:
            reason = "expired" if isinstance(exc, CursorExpired) else "unknown_stream"
            reset = StreamReset(stream_id=stream_id, reason=reason)
            return Response(sse.encode_event(reset), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
        except TokenwireError as exc:
            return error_response(exc)
        if attachment.subscription is None and not any(
            isinstance(event, StreamEnd) for event in attachment.catch_up
        ):
            attachment.detach("ended")
            return Response(status_code=204)
        return self.event_stream(attachment, retry=self.retry)  # type: ignore[return-value]

    async def cancel_stream(self, request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        try:
            status = await self.scoped(request).cancel_anywhere(stream_id)
        except TokenwireError as exc:
            return error_response(exc)
        return JSONResponse({"stream_id": stream_id, "status": status}, status_code=202)

    async def websocket(self, websocket: WebSocket) -> None:
        session = WebSocketSession(
            websocket,
            self.scoped(websocket),
            self.settings,
            limit_params=self.limit_params,
            connections=self.guards.metrics.connections_open.labels("websocket"),
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
        attachment = self.registry.attach(generation)
        if body.stream:
            encoder = oai.ChunkEncoder(
                completion_id, generation.model, created, include_usage=body.include_usage
            )
            return self.event_stream(  # type: ignore[return-value]
                attachment, start=generation, encode=encoder.encode_event
            )
        collector = _Collector()
        generation.start()
        try:
            await pump(attachment, collector)
        finally:
            attachment.detach("ended" if collector.ended else "disconnected")
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


def _drain_on_sigterm(state: TokenwireApp) -> None:
    """Make SIGTERM start a drain (see :meth:`StreamRegistry.drain`) before the server's own
    handler (uvicorn's) begins its shutdown: the running generations then outlive their
    connections. Only possible in the main thread (a server run by ``tokenwire serve`` or
    uvicorn); uvicorn restores the previous handler when it exits."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(state.drain)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def _wants_json(accept: str) -> bool:
    """Whether an Accept header asks for JSON rather than an event stream."""
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "application/json" in types and sse.MEDIA_TYPE not in types


def _cursor(raw: str | None) -> int:
    """A resume cursor: the last seq the client saw (a decimal integer >= 0; none: 0).
    Raises :class:`InvalidRequest`."""
    if raw is None or raw == "":
        return 0
    if not raw.isdecimal() or len(raw) > 18:
        raise InvalidRequest(f"Last-Event-ID must be a seq (a decimal integer), got {raw[:40]!r}")
    return int(raw)


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

    The stream log and the provider are started in the app's lifespan (the local model is
    loaded then, in a worker thread; Redis must answer, else startup fails with
    :class:`~tokenwire.streams.log.StreamLogUnavailable`). At shutdown the live generations get
    the drain timeout to finish (when draining), are cancelled, and the provider and the log are
    closed.
    """
    settings = settings or Settings()
    provider = provider or create_provider(settings)
    stream_log = create_stream_log(settings)
    state = TokenwireApp(settings, provider, stream_log)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await stream_log.start()
        _drain_on_sigterm(state)
        try:
            async with provider:
                with _gc_young_threshold(settings.gc_young_threshold):
                    try:
                        yield
                    finally:
                        await state.registry.aclose()
        finally:
            await stream_log.aclose()

    routes = [
        Route("/v1/streams", state.create_stream, methods=["POST"]),
        Route(
            "/v1/streams/{stream_id}/events",
            state.stream_events,
            methods=["GET"],
            name="stream_events",
        ),
        Route("/v1/streams/{stream_id}/cancel", state.cancel_stream, methods=["POST"]),
        WebSocketRoute("/v1/ws", state.websocket),
        Route("/v1/chat/completions", state.chat_completions, methods=["POST"]),
        Route("/v1/models", state.models, methods=["GET"]),
        Route("/healthz", state.healthz, methods=["GET"]),
        *web_routes(settings.web_dir),
        *state.guards.routes(),  # POST /v1/tokens, GET /metrics
    ]
    install_log_filters()
    app = _App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        middleware=state.guards.middleware(),
    )
    app.state.tokenwire = state
    return app


@contextmanager
def _gc_young_threshold(threshold: int | None) -> Iterator[None]:
    """Run with Python's young-generation GC threshold (threshold0 of :func:`gc.set_threshold`)
    set to ``threshold`` (``None``: leave it), and put the previous thresholds back after.

    Each young collection promotes what is alive at that moment (a stream's pending sleep,
    in-flight writes) towards the old generation, whose full collections stop every stream
    for ~0.1 s at 1000 open streams; fewer young collections promote fewer of them."""
    if threshold is None:
        yield
        return
    previous = gc.get_threshold()
    gc.set_threshold(threshold, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


class _App(Starlette):
    """Starlette that keeps the ASGI server's own ``send`` in the scope, for the transports'
    frames (see :func:`tokenwire.transports.base.server_send`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker runs: settings from ``TOKENWIRE_*``;
    also sets up tokenwire's logging (``TOKENWIRE_LOG_FORMAT``)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
