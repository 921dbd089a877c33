"""The six servers under test: tokenwire (serving both transports) and four baselines.

Each is an app factory for ``uvicorn --factory``; the harness runs every server in its own
uvicorn process with the same flags (uvloop, httptools, the ``websockets`` WebSocket
implementation without permessage-deflate, no access log). All stream from
:func:`transport.source.scheduled_tokens` with the schedule the client sent.

The baselines are written the way most projects stream tokens today, with nothing tuned:

- ``baseline_streaming``: Starlette ``StreamingResponse`` over an async generator that yields
  ``data: {token}\\n\\n`` per token (``POST /stream``);
- ``baseline_sse_starlette``: sse-starlette's ``EventSourceResponse`` over a generator of
  ``{"data": token}`` dicts (``POST /sse``; its defaults: ``\\r\\n`` line ends, a ping comment
  every 15 s, a disconnect listener);
- ``baseline_websocket``: a plain Starlette WebSocket endpoint that reads one JSON message and
  calls ``send_text(token)`` once per token, then closes 1000 (``/ws``);
- ``baseline_fastapi_sse``: FastAPI's native SSE (``fastapi.sse.EventSourceResponse``, FastAPI
  >= 0.135) as its documentation shows it: a path operation with
  ``response_class=EventSourceResponse`` whose async generator yields a pydantic model per
  token (``{"delta": token}``, validated and serialized by FastAPI), and at the end a
  ``ServerSentEvent`` ``event: usage`` with the completion tokens (``POST /fastapi-sse``). The
  load generator counts tokens from the deltas' text and checks them against that usage, not
  from frames.

tokenwire itself runs its real app (:func:`tokenwire.app.create_app`, settings from the
``TOKENWIRE_*`` environment) with :class:`ScheduledScriptedProvider`, the scripted provider on
the absolute schedule of :mod:`transport.source`.

Every server, tokenwire included, also answers ``GET /active`` (:func:`active`): the token
generators running in the process and when the last ones stopped, the same counter for all
(:data:`transport.source.LIVE`). The cancel phase reads it to time client cancel -> generator
stopped.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException
from fastapi.sse import EventSourceResponse as FastAPIEventSourceResponse
from fastapi.sse import ServerSentEvent
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tokenwire.app import create_app
from tokenwire.errors import ProviderError
from tokenwire.logs import configure_logging
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import (
    Delta,
    Finish,
    Prompt,
    ProviderEvent,
    Reasoning,
    ToolArguments,
    ToolCall,
)
from tokenwire.providers.scripted import ScriptedProvider
from tokenwire.settings import Settings
from transport.source import LIVE, Schedule, scheduled_tokens

# -- tokenwire ------------------------------------------------------------------------------


class ScheduledScriptedProvider(ScriptedProvider):
    """The scripted provider's tokens on the request's :class:`Schedule` (absolute deadlines).

    The schedule is the content of the last message (see :mod:`transport.source`); at most
    ``max_tokens`` tokens. A message that is not a schedule fails the stream with a
    non-retryable :class:`ProviderError`.

    The rich workload (``TOKENWIRE_SCRIPTED_REASONING_TOKENS``, ``..._TOOL_CALLS``, see
    ``RICH_WORKLOAD`` in :mod:`transport.harness`): each of the first ``reasoning_tokens``
    text tokens comes right after a reasoning delta, at its deadline; after the last text
    token, the scripted tool calls' events at once. The text tokens and their timing stay the
    schedule's, so the load generator measures them as in the text workload.

    ``per_token`` (for ``benchmarks/hot_path.py``'s rich pair): what each of the schedule's
    tokens is made into: ``text`` (a :class:`Delta`, the default), ``reasoning`` (a
    :class:`Reasoning`) or ``tool_call`` (the arguments of one call, :class:`ToolArguments`,
    after its :class:`ToolCall`), so that the CPU per event of each kind can be compared.
    """

    per_token: Literal["text", "reasoning", "tool_call"] = "text"

    def stream(self, params: GenerateParams, model: str) -> AsyncIterator[ProviderEvent]:
        return self._scheduled(params)

    async def _scheduled(self, params: GenerateParams) -> AsyncIterator[ProviderEvent]:
        try:
            schedule = Schedule.from_json(params.messages[-1].content)
        except ValueError as exc:
            raise ProviderError(str(exc), retryable=False) from exc
        if params.max_tokens is not None and params.max_tokens < schedule.tokens:
            schedule = Schedule(schedule.t0, params.max_tokens, schedule.ttft, schedule.interval)
        yield Prompt(1)
        produced = 0
        rich = self.script.items(0)  # reasoning, then tool calls (no text): the rich workload
        reasoning = [item for item in rich if isinstance(item, Reasoning)]
        calls = [item for item in rich if not isinstance(item, Reasoning)]
        per_token = self.per_token
        index = sum(isinstance(item, ToolCall) for item in calls)  # after the scripted calls'
        if per_token == "tool_call":
            yield ToolCall(index, f"call_{index}", "lookup")
        # aclosing: when tokenwire closes this provider stream, the token source stops with it
        # (the Provider contract), not later when the garbage collector finds it.
        async with aclosing(scheduled_tokens(schedule)) as tokens:
            async for text in tokens:
                if produced < len(reasoning):
                    yield reasoning[produced]
                produced += 1
                if per_token == "text":
                    yield Delta(text)
                elif per_token == "reasoning":
                    yield Reasoning(text)
                else:
                    yield ToolArguments(index, text)
        for item in calls:
            yield item
        tool_calls = calls or per_token == "tool_call"
        reason = FinishReason.TOOL_CALLS if tool_calls else FinishReason.STOP
        yield Finish(reason, Usage.of(1, produced))


def tokenwire_app(
    per_token: Literal["text", "reasoning", "tool_call"] = "text",
) -> Starlette:
    """tokenwire's app, settings from ``TOKENWIRE_*``, on :class:`ScheduledScriptedProvider`
    (making each token a ``per_token`` event); plus the benchmark's ``GET /active``
    (:func:`active`), ahead of tokenwire's own routes."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    provider = ScheduledScriptedProvider.from_settings(settings)
    provider.per_token = per_token
    app = create_app(settings, provider=provider)
    app.router.routes.insert(0, _active_route())
    return app


# -- every server ---------------------------------------------------------------------------


async def active(request: Request) -> Response:
    """``GET /active[?since=<time.monotonic() seconds>]`` -> ``{"active": count, "stopped":
    [[t0, stopped_at], ...]}``: the running token generators of this process, and the stops
    at or after ``since`` (see :class:`transport.source.LiveGenerators`); 400 for a bad
    ``since``."""
    try:
        since = float(request.query_params.get("since", "0"))
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        return JSONResponse({"error": {"code": "invalid_request", "message": "since"}}, 400)
    return JSONResponse(LIVE.report(since))


def _active_route() -> Route:
    return Route("/active", active, methods=["GET"])


# -- baselines ------------------------------------------------------------------------------


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _schedule_of(request: Request) -> Schedule | Response:
    try:
        return Schedule.from_request(await request.json())
    except ValueError as exc:
        return JSONResponse({"error": {"code": "invalid_request", "message": str(exc)}}, 400)


async def _streaming(request: Request) -> Response:
    schedule = await _schedule_of(request)
    if isinstance(schedule, Response):
        return schedule

    async def body() -> AsyncIterator[str]:
        async for token in scheduled_tokens(schedule):
            yield f"data: {token}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


async def _sse_starlette(request: Request) -> Response:
    schedule = await _schedule_of(request)
    if isinstance(schedule, Response):
        return schedule

    async def events() -> AsyncIterator[dict[str, str]]:
        async for token in scheduled_tokens(schedule):
            yield {"data": token}

    return EventSourceResponse(events())


async def _websocket(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        schedule = Schedule.from_request(await websocket.receive_json())
        async for token in scheduled_tokens(schedule):
            await websocket.send_text(token)
        await websocket.close()
    except ValueError:
        await websocket.close(code=1008)
    except WebSocketDisconnect:
        pass


def baseline_streaming() -> Starlette:
    """Baseline (a): ``POST /stream`` -> ``StreamingResponse`` of ``data: {token}\\n\\n``."""
    return Starlette(
        routes=[Route("/stream", _streaming, methods=["POST"]), _health_route(), _active_route()]
    )


def baseline_sse_starlette() -> Starlette:
    """Baseline (b): ``POST /sse`` -> sse-starlette ``EventSourceResponse``."""
    return Starlette(
        routes=[Route("/sse", _sse_starlette, methods=["POST"]), _health_route(), _active_route()]
    )


def baseline_websocket() -> Starlette:
    """Baseline (c): WebSocket ``/ws``: one JSON request, then one ``send_text`` per token."""
    return Starlette(routes=[WebSocketRoute("/ws", _websocket), _health_route(), _active_route()])


class ChatMessage(BaseModel):
    """A message of baseline (d)'s request body."""

    role: str
    content: str


class StreamRequest(BaseModel):
    """Baseline (d)'s request body: the same fields every server reads (the schedule is the
    last message's content, see :mod:`transport.source`)."""

    messages: list[ChatMessage]
    max_tokens: int


class TokenChunk(BaseModel):
    """Baseline (d)'s event per token: ``data: {"delta": "<token>"}``."""

    delta: str


class CompletionUsage(BaseModel):
    """Baseline (d)'s last event (``event: usage``): the tokens it streamed."""

    completion_tokens: int


def _fastapi_schedule(body: StreamRequest) -> Schedule:
    """Baseline (d)'s dependency: the request's schedule, or a 400 naming the problem."""
    try:
        return Schedule.from_json(body.messages[-1].content)
    except (IndexError, ValueError) as exc:
        raise HTTPException(400, f"invalid_request: {exc}") from exc


def baseline_fastapi_sse() -> FastAPI:
    """Baseline (d): ``POST /fastapi-sse`` -> FastAPI's own ``EventSourceResponse`` over an
    async generator of :class:`TokenChunk` models, then ``event: usage``
    (:class:`CompletionUsage`); a bad schedule is a 400."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/fastapi-sse", response_class=FastAPIEventSourceResponse)
    async def stream(
        schedule: Annotated[Schedule, Depends(_fastapi_schedule)],
    ) -> AsyncIterable[TokenChunk]:
        produced = 0
        async for token in scheduled_tokens(schedule):
            produced += 1
            yield TokenChunk(delta=token)
        usage = CompletionUsage(completion_tokens=produced)
        yield ServerSentEvent(event="usage", data=usage)  # FastAPI sends it as it is

    app.router.routes.extend([_health_route(), _active_route()])
    return app


def _health_route() -> Route:
    return Route("/healthz", _healthz, methods=["GET"])
