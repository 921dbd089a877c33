"""The route handlers of tokenwire's own API (wire protocol v1) and the OpenAI-compatible one,
over one :class:`TokenwireApp` (the process's state). Routes parse and check the request, ask
the registry (through the edge's scoped view) for a stream, and hand it to a transport; every
error answer comes from :mod:`tokenwire.edge.responses`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from tokenwire import __version__
from tokenwire.edge.guards import Guards
from tokenwire.edge.limits import ScopedRegistry, check_request
from tokenwire.edge.proxy import forwarded
from tokenwire.edge.responses import error_response
from tokenwire.errors import InvalidField, InvalidRequest, TokenwireError
from tokenwire.logs import request_id_var
from tokenwire.protocol import openai as oai
from tokenwire.protocol import sse
from tokenwire.protocol.events import FinishReason, StreamEnd, StreamReset
from tokenwire.protocol.requests import (
    GenerateParams,
    check_conversation,
    describe_validation_error,
)
from tokenwire.providers import Provider
from tokenwire.settings import DisconnectPolicy, Settings
from tokenwire.streams.generation import Generation
from tokenwire.streams.log import (
    CursorExpired,
    StreamLog,
    UnknownStream,
    check_cursor,
    reset_reason,
)
from tokenwire.streams.registry import Attachment, StreamRegistry
from tokenwire.transports.collect import collect
from tokenwire.transports.sse import EventStreamResponse
from tokenwire.transports.websocket import WebSocketSession


async def json_body(request: Request) -> Any:
    """The request's JSON body. Raises :class:`InvalidRequest` for invalid JSON, and for JSON
    nested deeper than the parser's recursion limit (about 1,000 levels)."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None


@contextlib.contextmanager
def released_on_error(generation: Generation) -> Iterator[None]:
    """End ``generation`` (created, not started) if the block raises: started and cancelled
    at once, so that it leaves the registry and its stream limits (for the steps a route
    takes between ``create`` and handing the generation to a transport)."""
    try:
        yield
    except BaseException:
        generation.start()
        generation.cancel()
        raise


M = TypeVar("M", bound=BaseModel)

Answer = Response | EventStreamResponse
"""What a route returns: a complete response, or an event stream (an ASGI app of its own)."""


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidField(describe_validation_error(exc)) from exc


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
        streams only (see :class:`tokenwire.edge.limits.ScopedRegistry`)."""
        return self.guards.scoped(connection)

    async def drain(self) -> None:
        """Begin a graceful shutdown (see :meth:`StreamRegistry.drain`). With a log that no
        other process can serve, return once the live streams have ended (at most
        ``drain_timeout`` seconds); the server's own shutdown, which closes connections,
        begins after that."""
        self.registry.drain()
        if not self.stream_log.shared:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.drain_timeout):
                    await self.registry.wait_idle()

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
            connections=self.guards.metrics.connections("sse"),
            **options,
        )

    def limit_params(self, params: GenerateParams) -> GenerateParams:
        """Apply the server's max_tokens default and limit, and the message count and size
        limits (422); check the conversation's meaning (a tool message names its call, tool
        schemas are objects...) and that the provider honours every field asked for (400
        naming the field, and the provider). Raises :class:`InvalidRequest`."""
        try:
            check_request(params, self.settings)
        except InvalidRequest as exc:
            raise InvalidField(exc.message) from None
        check_conversation(params)
        self.provider.check_honoured(params)
        if params.max_tokens is None:
            return params.model_copy(update={"max_tokens": self.settings.max_tokens})
        if params.max_tokens > self.settings.max_tokens_limit:
            raise InvalidField(
                f"max_tokens: must be <= {self.settings.max_tokens_limit}, got {params.max_tokens}"
            )
        return params

    # -- native routes --------------------------------------------------------------------

    async def create_stream(self, request: Request) -> Answer:
        detached = _wants_json(request.headers.get("accept", ""))
        try:
            params = self.limit_params(_validate(GenerateParams, await json_body(request)))
            if detached and params.on_disconnect == "cancel":
                raise InvalidField(
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
            events_url = _url_for(request, "stream_events", stream_id=generation.stream_id)
            return JSONResponse(
                {"stream_id": generation.stream_id, "events_url": events_url},
                status_code=201,
                headers={"Location": events_url},
            )
        return self.event_stream(
            self.registry.attach(generation),
            start=generation,
            retry=self.retry,
            headers={"X-Stream-Id": generation.stream_id},
        )

    async def stream_events(self, request: Request) -> Answer:
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
            reset = StreamReset(stream_id=stream_id, reason=reset_reason(exc))
            return Response(sse.encode_event(reset), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
        except TokenwireError as exc:
            return error_response(exc)
        if attachment.subscription is None and not any(
            isinstance(event, StreamEnd) for event in attachment.catch_up
        ):
            attachment.detach("ended")
            return Response(status_code=204)
        return self.event_stream(attachment, retry=self.retry)

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
            connections=self.guards.metrics.connections("websocket"),
        )
        await session.run()

    async def healthz(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "provider": self.provider.name,
                "stream_log": "memory" if self.settings.stream_log == "memory" else "redis",
                "live_streams": len(self.registry),
            }
        )

    # -- OpenAI-compatible routes ---------------------------------------------------------

    async def chat_completions(self, request: Request) -> Answer:
        try:
            body = _validate(oai.ChatCompletionRequest, await json_body(request))
            refused = body.refused()
            if refused is not None:
                field, why = refused
                raise InvalidRequest(f"{field}: not supported: {why}", param=field)
            params = self.limit_params(body.to_generate_params())
            generation = self.scoped(request).create(params, transport="openai")
        except TokenwireError as exc:
            return error_response(exc, openai=True)
        completion_id = "chatcmpl-" + secrets.token_urlsafe(18)
        created = int(generation.created)
        attachment = self.registry.attach(generation)
        if body.stream:
            encoder = oai.ChunkEncoder(
                completion_id, generation.model, created, include_usage=body.include_usage
            )
            return self.event_stream(attachment, start=generation, encode=encoder.encode_event)
        collected = await collect(attachment, request.receive, start=generation)
        if collected is None:  # the client left: nobody to answer (the generation stopped)
            return Response(status_code=499)
        if collected.error is not None:
            error = collected.error
            failure = TokenwireError(error.message, retryable=error.retryable, code=error.code)
            return error_response(failure, openai=True)
        return JSONResponse(
            oai.completion_body(
                completion_id,
                generation.model,
                created,
                "".join(collected.text),
                str(generation.finish_reason or FinishReason.STOP),
                generation.usage,
                reasoning="".join(collected.reasoning) or None,
                tool_calls=collected.tool_calls,
            )
        )

    async def models(self, request: Request) -> Response:
        body = oai.models_body(
            self.provider.models,
            self.started,
            "tokenwire",
            context_window=self.provider.context_window,
        )
        return JSONResponse(body)


def _url_for(request: Request, name: str, **path_params: str) -> str:
    """The absolute URL of this app's route ``name``, under its mount path: a host app or a
    proxy that mounts tokenwire at ``/llm`` (``root_path``) gets ``http://host/llm/v1/...``.
    Looked up in tokenwire's own router, so a host route of the same name cannot shadow it.
    Behind a trusted proxy, the host is the one it forwarded (the scheme is already its)."""
    path = request.app.router.url_path_for(name, **path_params)
    url = request.url.replace(path=request.scope.get("root_path", "") + path, query="")
    host = forwarded(request.scope).host
    return str(url.replace(netloc=host) if host else url)


def _wants_json(accept: str) -> bool:
    """Whether an Accept header asks for JSON rather than an event stream."""
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "application/json" in types and sse.MEDIA_TYPE not in types


def _cursor(raw: str | None) -> int:
    """A resume cursor: the last seq the client saw (ASCII decimal digits; none: 0).
    Raises :class:`InvalidRequest`."""
    if raw is None or raw == "":
        return 0
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # not Unicode digits
        raise InvalidRequest(f"Last-Event-ID must be a seq (a decimal integer), got {raw[:40]!r}")
    cursor = int(raw)
    check_cursor(cursor)
    return cursor
