"""The route handlers of the OpenAI Responses API (OpenAI API reference, "Responses"; the
"Background mode" and "WebSocket mode" guides), over the same Generation, stream log,
Subscription and pump as every other protocol; the codec is
:mod:`tokenwire.protocol.responses`.

Routes:
    POST /v1/responses                  create: ``stream`` -> SSE of Responses events;
                                        ``background`` -> runs detached, resumable; else the
                                        Response object when it is complete
    GET  /v1/responses/{id}             the Response object as it stands (any worker);
                                        ``?stream=true&starting_after=N``: its events after
                                        sequence_number N, then live
    POST /v1/responses/{id}/cancel      cancel (idempotent), answers the final object
    GET  /v1/responses (WebSocket)      WebSocket mode: ``response.create`` messages, the same
                                        events as JSON text frames

A response's record (:class:`~tokenwire.protocol.responses.ResponseRecord`) is a document of
the stream log, its events are its stream's: so retrieve, cancel, resume and
``previous_response_id`` work on any worker sharing the log, for as long as the log keeps the
stream (``stream_log_ttl`` after its end). ``store: false`` keeps no record: such a response
can be neither retrieved nor continued over HTTP (404, as OpenAI), only on the WebSocket that
made it (its latest response is cached per connection). Errors take OpenAI's shape
(:mod:`tokenwire.edge.responses`).

WebSocket mode: a ``response.create`` without ``stream_id`` while another such response is in
flight gets an ``error`` frame (code ``response_already_in_flight``) and the socket stays
open; with ``stream_id`` (a lane) responses of different lanes run at once, and those of one
lane run in order (FIFO). Every event of a laned response carries its ``stream_id``. Close
codes are :class:`tokenwire.protocol.websocket.CloseCode`'s, as on ``/v1/ws``: 1000 after the
client's close, 1012 when the server drains, 4008 for a slow consumer; uvicorn sends 1009 for
an oversized frame. Authentication, the Origin allowlist and the connection limits are the
edge's, as on ``/v1/ws``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from tokenwire.edge.responses import error_response
from tokenwire.errors import InvalidRequest, NotFound, TokenwireError
from tokenwire.protocol.events import Event
from tokenwire.protocol.requests import GenerateParams, describe_validation_error, invalid_request
from tokenwire.protocol.responses import (
    ResponseRecord,
    ResponsesEncoder,
    ResponsesRequest,
    encode_json,
    encode_sse,
    record_key,
    responses_param,
    ws_error,
)
from tokenwire.routes import json_body, released_on_error
from tokenwire.settings import DisconnectPolicy
from tokenwire.streams.generation import Generation
from tokenwire.streams.log import CursorExpired, UnknownStream
from tokenwire.streams.registry import Streams
from tokenwire.transports.base import Transport
from tokenwire.transports.collect import collect_into
from tokenwire.transports.websocket import FramesTransport, WebSocketSession

if TYPE_CHECKING:
    from tokenwire.edge.limits import ScopedRegistry
    from tokenwire.routes import Answer, TokenwireApp

MAX_LANE_LENGTH = 128

UNWRITTEN_GRACE = 30.0
"""Seconds after its creation during which a response whose stream a shared log (Redis) does
not hold yet counts as ``queued`` (its first events may not have reached Redis); later, as
expired (404). A memory log holds a stream from its creation: unknown there is expired."""


class EncoderTransport(Transport):
    """A non-streamed answer: every event goes into a :class:`ResponsesEncoder`, whose
    Response object is the answer. Writes never wait and never fail."""

    name = "responses-collect"

    def __init__(self, encoder: ResponsesEncoder) -> None:
        self.encoder = encoder

    async def send_events(self, events: list[Event]) -> None:
        for event in events:
            self.encoder.feed(event)

    async def send_heartbeat(self) -> None:
        """Nothing to keep alive: no byte is written until the answer is complete."""


def _encoder(record: ResponseRecord, **options: Any) -> ResponsesEncoder:
    return ResponsesEncoder(
        record.id, record.created_at, record.echo, background=record.background, **options
    )


def _request_body(data: Any) -> ResponsesRequest:
    """The validated create body (400 naming the first bad field, then the first refused)."""
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        body = ResponsesRequest.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc) from exc
    refused = body.refused()
    if refused is not None:
        field, why = refused
        raise InvalidRequest(f"{field}: {why}", param=field)
    return body


def _starting_after(raw: str | None) -> int:
    """``starting_after``: a sequence_number (decimal, >= 0); none: -1 (from the start)."""
    if raw is None or raw == "":
        return -1
    if not raw.isdecimal() or len(raw) > 18:
        raise InvalidRequest(
            f"starting_after: must be a sequence_number (an integer >= 0), got {raw[:40]!r}",
            param="starting_after",
        )
    return int(raw)


class ResponsesRoutes:
    """The Responses API's handlers over one :class:`TokenwireApp` (see the module docstring)."""

    def __init__(self, app: TokenwireApp) -> None:
        self.app = app
        self.settings = app.settings
        self.log = app.stream_log
        longest = app.settings.max_stream_duration or 86_400.0
        self.background_grace = longest  # a background response runs on without readers
        self.record_ttl = longest + app.settings.stream_log_ttl  # its record outlives its stream

    # -- shared steps ---------------------------------------------------------------------

    async def load(self, response_id: str, key_id: str | None) -> ResponseRecord:
        """The record of ``response_id`` if the caller's key owns it. Raises
        :class:`NotFound` (unknown, expired, ``store: false``, or another key's)."""
        raw = await self.log.get_document(record_key(response_id))
        if raw is None:
            raise NotFound(f"Response with id '{response_id}' not found.")
        record = ResponseRecord.model_validate_json(raw)
        if record.key_id != key_id:
            raise NotFound(f"Response with id '{response_id}' not found.")
        return record

    async def read(self, record: ResponseRecord) -> ResponsesEncoder:
        """An encoder fed with every event the log holds of ``record``'s stream so far
        (nothing yet, within :data:`UNWRITTEN_GRACE` of its creation: the object is still
        ``queued``). Raises :class:`NotFound` when the log no longer keeps the stream."""
        encoder = _encoder(record)
        try:
            snapshot = self.log.snapshot(record.stream_id, 0)
            if snapshot is not None:
                events = snapshot[0]
            else:
                reader = await self.log.open_reader(record.stream_id, 0)
                events = reader.catch_up
                await reader.aclose()
        except UnknownStream as exc:
            shared = self.log.name != "memory"  # a memory log holds a stream from its creation
            if not shared or time.time() - record.created_at > UNWRITTEN_GRACE:
                raise NotFound(f"Response with id '{record.id}' is no longer kept.") from exc
            events = []
        except CursorExpired as exc:
            raise NotFound(f"Response with id '{record.id}' is no longer kept.") from exc
        for event in events:
            encoder.feed(event)
        return encoder

    async def context_of(
        self,
        previous_id: str,
        key_id: str | None,
        cached: dict[str, list[dict[str, Any]]] | None = None,
    ) -> list[dict[str, Any]]:
        """The conversation that ``previous_response_id`` continues: its context, its input
        and its output (chat messages). Raises :class:`NotFound`, or
        :class:`InvalidRequest` while that response is still in progress."""
        if cached is not None and previous_id in cached:
            return cached[previous_id]
        try:
            record = await self.load(previous_id, key_id)
        except NotFound:
            raise NotFound(f"Previous response with id '{previous_id}' not found.") from None
        encoder = await self.read(record)
        if not encoder.ended:
            raise InvalidRequest(
                f"previous_response_id: response '{previous_id}' is still in progress",
                param="previous_response_id",
            )
        keep_reasoning = "reasoning_history" in self.app.provider.honours
        return record.context + encoder.output_messages(reasoning=keep_reasoning)

    def params(self, fields: dict[str, Any]) -> GenerateParams:
        """Validated, limited and honoured generation parameters (400 naming the Responses
        field: ``input``, ``text.format``, ``reasoning.effort``...)."""
        try:
            params = GenerateParams.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            param = responses_param(".".join(str(part) for part in first["loc"]) or None)
            raise InvalidRequest(describe_validation_error(exc), param=param) from exc
        try:
            return self.app.limit_params(params)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param=responses_param(exc.param)) from None

    async def start(
        self,
        streams: Streams,
        body: ResponsesRequest,
        *,
        key_id: str | None,
        transport: str,
        cached: dict[str, list[dict[str, Any]]] | None = None,
    ) -> tuple[Generation, ResponseRecord]:
        """Create (not start) the generation of ``body`` and store its record (unless
        ``store: false``). Raises what the steps raise: :class:`InvalidRequest`,
        :class:`NotFound`, the registry's limits, ``StreamLogUnavailable``."""
        background = bool(body.background)
        context: list[dict[str, Any]] = []
        if body.previous_response_id is not None:
            context = await self.context_of(body.previous_response_id, key_id, cached)
        keep_reasoning = "reasoning_history" in self.app.provider.honours
        fields, conversation = body.to_params(context, keep_reasoning=keep_reasoning)
        params = self.params(fields)
        generation = streams.create(
            params,
            transport=transport,
            on_disconnect=DisconnectPolicy.DETACH if background else None,
        )
        if background:
            generation.detach_grace = self.background_grace
        record = ResponseRecord(
            id="resp_" + secrets.token_urlsafe(18),
            stream_id=generation.stream_id,
            created_at=int(generation.created),
            echo=body.echo(generation.model),
            context=conversation,
            key_id=key_id,
            background=background,
        )
        if body.wants_store:
            with released_on_error(generation):
                await self.log.put_document(
                    record_key(record.id), record.model_dump_json(), ttl=self.record_ttl
                )
        return generation, record

    # -- HTTP -----------------------------------------------------------------------------

    async def create(self, request: Request) -> Answer:
        """``POST /v1/responses``: the events over SSE (``stream``), the object at once and
        the response detached (``background``), or the object once complete. 400 for a field
        refused (OpenAI's shape, ``param`` naming it), 404 for an unknown
        ``previous_response_id``, 429 / 503 from the limits and the log."""
        scoped = self.app.scoped(request)
        try:
            body = _request_body(await json_body(request))
            if body.background and not body.wants_store:
                raise InvalidRequest("store: a background response must be stored", param="store")
            generation, record = await self.start(
                scoped, body, key_id=scoped.key_id, transport="responses"
            )
        except TokenwireError as exc:
            return error_response(exc, openai=True)
        encoder = _encoder(record)
        if body.stream:

            def encode(event: Event) -> bytes:
                return encode_sse(encoder.feed(event))

            return self.app.event_stream(
                self.app.registry.attach(generation), start=generation, encode=encode
            )
        if body.background:
            generation.start()
            return JSONResponse(encoder.response())
        attachment = self.app.registry.attach(generation)
        if not await collect_into(
            EncoderTransport(encoder), attachment, request.receive, start=generation
        ):
            return Response(status_code=499)  # the client left: nobody to answer
        failure = encoder.failure
        if failure is not None:
            error = TokenwireError(failure.message, retryable=failure.retryable, code=failure.code)
            return error_response(error, openai=True)
        return JSONResponse(encoder.response())

    async def retrieve(self, request: Request) -> Answer:
        """The object, or (``stream=true``) its events after ``starting_after``: a replay from
        the log's start through a fresh encoder (see the numbering in
        :mod:`tokenwire.protocol.responses`), then live. ``starting_after`` beyond the last
        event is a 400 when that is known here (the stream ended, or runs in this process); a
        stream that runs on another worker is numbered as its events arrive."""
        scoped = self.app.scoped(request)
        response_id = request.path_params["response_id"]
        try:
            record = await self.load(response_id, scoped.key_id)
            if request.query_params.get("stream", "false").lower() not in ("true", "1"):
                return JSONResponse((await self.read(record)).response())
            after = _starting_after(request.query_params.get("starting_after"))
            try:
                attachment = await scoped.resume(record.stream_id, 0)
            except (UnknownStream, CursorExpired) as exc:
                raise NotFound(f"Response with id '{response_id}' is no longer kept.") from exc
            probe = _encoder(record)
            for event in attachment.catch_up:
                probe.feed(event)
            if after > probe.last_number and (probe.ended or attachment.generation is not None):
                attachment.detach("ended")
                raise InvalidRequest(
                    f"starting_after: {after} is ahead of the stream "
                    f"(its last sequence_number is {probe.last_number})",
                    param="starting_after",
                )
        except TokenwireError as exc:
            return error_response(exc, openai=True)
        encoder = _encoder(record, after=after)

        def encode(event: Event) -> bytes:
            return encode_sse(encoder.feed(event))

        return self.app.event_stream(attachment, encode=encode)

    async def cancel(self, request: Request) -> Response:
        """Cancel wherever the response runs, wait for its end, answer the final object.
        Idempotent: a response that has ended answers its object as it is."""
        scoped = self.app.scoped(request)
        response_id = request.path_params["response_id"]
        try:
            record = await self.load(response_id, scoped.key_id)
            try:
                await scoped.cancel_anywhere(record.stream_id)
                attachment = await scoped.resume(record.stream_id, 0)
            except (UnknownStream, CursorExpired) as exc:
                raise NotFound(f"Response with id '{response_id}' is no longer kept.") from exc
        except TokenwireError as exc:
            return error_response(exc, openai=True)
        encoder = _encoder(record)
        if not await collect_into(EncoderTransport(encoder), attachment, request.receive):
            return Response(status_code=499)
        return JSONResponse(encoder.response())

    # -- WebSocket mode ---------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        """WebSocket mode on ``/v1/responses`` (see :class:`ResponsesSession`)."""
        session = ResponsesSession(self, websocket)
        await session.run()


class ResponsesSession(WebSocketSession):
    """One WebSocket-mode socket: :class:`WebSocketSession`'s life (reading, one pump task
    per response, detach on disconnect, drain, slow consumers), with ``response.create`` as
    its only client message and each response's events framed by its own
    :class:`ResponsesEncoder` (:class:`FramesTransport`). See the module docstring for lanes
    and errors."""

    def __init__(self, routes: ResponsesRoutes, websocket: WebSocket) -> None:
        app = routes.app
        scoped = app.scoped(websocket)
        super().__init__(
            websocket,
            scoped,
            app.settings,
            limit_params=app.limit_params,
            connections=app.guards.metrics.connections("websocket"),
        )
        self.routes = routes
        self.scoped: ScopedRegistry = scoped
        self._lanes: dict[str | None, str] = {}  # lane (None: none) -> its stream in flight
        self._queued: dict[str, deque[ResponsesRequest]] = {}  # a busy lane's next requests
        self._running: dict[str, tuple[ResponseRecord, ResponsesEncoder, str | None]] = {}
        self._cache: dict[str, list[dict[str, Any]]] = {}  # the latest response's conversation
        self._tasks: set[asyncio.Task[None]] = set()

    async def _handle(self, data: str | bytes) -> None:
        lane: str | None = None
        try:
            message = _ws_message(data)
            lane = message.pop("stream_id", None)
            if lane is not None and (not isinstance(lane, str) or len(lane) > MAX_LANE_LENGTH):
                lane = None
                raise InvalidRequest(
                    "stream_id: must be a string of at most 128 characters", param="stream_id"
                )
            body = _request_body(message)
            if lane is None and None in self._lanes:
                frame = ws_error(
                    "response_already_in_flight",
                    "a response is already in flight on this socket: wait for its end, or set "
                    "stream_id to run responses side by side",
                    status=400,
                )
                await self.transport.send_text(frame)
                return
            if lane is not None and lane in self._lanes:
                self._queued.setdefault(lane, deque()).append(body)
                return
            await self._create(body, lane)
        except TokenwireError as exc:
            await self._send_ws_error(exc, lane)

    async def _send_ws_error(self, exc: TokenwireError, lane: str | None) -> None:
        param = exc.param if isinstance(exc, InvalidRequest) else None
        status = 400 if exc.status == 422 else exc.status
        await self.transport.send_text(
            ws_error(exc.code, exc.message, status=status, param=param, lane=lane)
        )

    async def _create(self, body: ResponsesRequest, lane: str | None) -> None:
        generation, record = await self.routes.start(
            self.scoped,
            body,
            key_id=self.scoped.key_id,
            transport="responses-ws",
            cached=self._cache,
        )
        encoder = _encoder(record, lane=lane)
        self._lanes[lane] = generation.stream_id
        self._running[generation.stream_id] = (record, encoder, lane)

        def frames(event: Event) -> list[str]:
            return encode_json(encoder.feed(event))

        attachment = self.scoped.attach(generation)
        self._deliver_in_task(attachment, FramesTransport(self.websocket, frames))
        generation.start()

    def _delivered(self, attachment: Any) -> None:
        running = self._running.pop(attachment.stream_id, None)
        if running is None:
            return
        record, encoder, lane = running
        if self._lanes.get(lane) == attachment.stream_id:
            del self._lanes[lane]
        if encoder.ended:
            keep_reasoning = "reasoning_history" in self.routes.app.provider.honours
            conversation = record.context + encoder.output_messages(reasoning=keep_reasoning)
            self._cache = {record.id: conversation}
        if lane is None or not self._reading or lane not in self._queued:
            return
        queued = self._queued[lane]
        body = queued.popleft()
        if not queued:
            del self._queued[lane]
        task = asyncio.create_task(self._create_queued(body, lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create_queued(self, body: ResponsesRequest, lane: str | None) -> None:
        try:
            await self._create(body, lane)
        except TokenwireError as exc:
            try:
                await self._send_ws_error(exc, lane)
            except (OSError, RuntimeError):
                pass  # the socket is gone


def _ws_message(data: str | bytes) -> dict[str, Any]:
    """A ``response.create`` message's fields (without ``type``). Raises
    :class:`InvalidRequest` for anything else: not JSON, another type (``response.steer`` is
    not supported), ``stream`` / ``background`` (not in WebSocket mode), ``generate: false``."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"message is not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise InvalidRequest("a message must be a JSON object with a 'type'", param="type")
    kind = message.pop("type", None)
    if kind != "response.create":
        raise InvalidRequest(
            f"type: unsupported client event {kind!r} (use response.create)", param="type"
        )
    for key in ("stream", "background"):
        if key in message:
            raise InvalidRequest(f"{key}: not part of a WebSocket-mode response.create", param=key)
    if message.pop("generate", True) is not True:
        raise InvalidRequest(
            "generate: warm-up (generate: false) is not supported", param="generate"
        )
    return message
