"""The route handlers of the Vercel AI SDK's chat transport (``DefaultChatTransport``, what
``useChat()`` uses with no options; ``packages/ai/src/ui/http-chat-transport.ts``), over the
same Generation, stream log, Subscription and pump as every other protocol; the codec is
:mod:`tokenwire.protocol.aisdk`, the chat -> stream index :mod:`tokenwire.chats`.

Routes:
    POST /api/chat                  a new stream of the chat's next assistant message, as a UI
                                    message stream (SSE): ``start`` ... ``finish``, ``[DONE]``
    GET  /api/chat/{id}/stream      resume (``reconnectToStream``, ``useChat({resume: true})``):
                                    204 when the chat has no running stream, else a replay of
                                    the active stream from its start, then live
    POST /api/chat/{id}/stop        cancel the chat's active stream on whichever worker runs it:
                                    202 ``{chat_id, stream_id, status}``; 404 if the chat has
                                    no stream (or is another key's)

The SDK's ``stop()`` only aborts the fetch: on ``POST /api/chat`` that is a disconnect, not a
cancel. The generation detaches (``on_disconnect: detach``, for ``detach_grace`` seconds
without a reader) and keeps writing to the log, so that a resume on any worker gets the whole
message; only the stop route cancels it. A new ``POST`` for a chat makes its stream the chat's
active one; an older stream still running is left to end on its own.

Errors before the stream starts are tokenwire's JSON error bodies with their 4xx/5xx status
(the SDK throws with the body's text); after the start they travel as an ``error`` chunk, then
``finish`` (finishReason ``error``). Authentication, the Origin allowlist, CORS and the size
and stream limits are the edge's, as on every route. A resume or a stop of another key's chat
finds nothing: 204 and 404, as for a chat that never was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tokenwire.chats import open_active, remember_active, stop_active
from tokenwire.edge.responses import error_response
from tokenwire.errors import InvalidRequest, NotFound, TokenwireError
from tokenwire.logs import request_id_var
from tokenwire.protocol.aisdk import (
    HEADERS,
    MAX_CHAT_ID_LENGTH,
    ChatRequest,
    UIMessageSSE,
    new_message_id,
)
from tokenwire.protocol.requests import GenerateParams, invalid_request
from tokenwire.routes import json_body, released_on_error
from tokenwire.settings import DisconnectPolicy
from tokenwire.streams.generation import Generation

if TYPE_CHECKING:
    from tokenwire.edge.limits import ScopedRegistry
    from tokenwire.routes import Answer, TokenwireApp


class ChatRoutes:
    """The AI SDK chat routes over one :class:`TokenwireApp` (see the module docstring)."""

    def __init__(self, app: TokenwireApp) -> None:
        self.app = app
        self.log = app.stream_log
        longest = app.settings.max_stream_duration or 86_400.0
        self.index_ttl = longest + app.settings.stream_log_ttl  # an entry outlives its stream

    def params(self, body: ChatRequest) -> GenerateParams:
        """Validated, limited and honoured generation parameters (400 naming the field)."""
        try:
            params = GenerateParams.model_validate(body.to_params())
        except ValidationError as exc:
            raise invalid_request(exc) from exc
        return self.app.limit_params(params)

    async def start(
        self, scoped: ScopedRegistry, body: ChatRequest, *, transport: str
    ) -> tuple[Generation, str]:
        """Create (not start) the generation of ``body``, make it the chat's active stream,
        and return it with the id of the assistant message it builds. Raises
        :class:`InvalidRequest`, the registry's limits, ``StreamLogUnavailable``."""
        params = self.params(body)
        generation = scoped.create(
            params,
            transport=transport,
            request_id=request_id_var.get(),
            on_disconnect=DisconnectPolicy.DETACH,
        )
        message_id = body.response_message_id()
        with released_on_error(generation):
            await remember_active(
                self.log,
                scoped.key_id,
                body.id,
                generation.stream_id,
                message_id=message_id,
                ttl=self.index_ttl,
            )
        return generation, message_id

    async def chat(self, request: Request) -> Answer:
        """``POST /api/chat``: the UI message stream of a new generation (see the module
        docstring). 400 naming a bad or refused field, 401/403/413/429/503 from the edge."""
        scoped = self.app.scoped(request)
        try:
            body = ChatRequest.parse(await json_body(request))
            generation, message_id = await self.start(scoped, body, transport="aisdk")
        except TokenwireError as exc:
            return error_response(exc)
        return self.app.event_stream(
            self.app.registry.attach(generation),
            start=generation,
            encode=UIMessageSSE(message_id),
            headers=HEADERS,
        )

    async def resume(self, request: Request) -> Answer:
        """``GET /api/chat/{id}/stream``: 204 when the chat has no running stream (none, ended,
        no longer kept, another key's), else the active stream replayed from its first event
        (the SDK's reducer rebuilds the message from ``start``), then live."""
        scoped = self.app.scoped(request)
        try:
            chat_id = _chat_id(request)
            found = await open_active(scoped, self.log, scoped.key_id, chat_id, ttl=self.index_ttl)
        except TokenwireError as exc:
            return error_response(exc)
        if found is None:
            return Response(status_code=204)
        chat, attachment = found
        codec = UIMessageSSE(chat.message_id or new_message_id())
        return self.app.event_stream(attachment, encode=codec, headers=HEADERS)

    async def stop(self, request: Request) -> Response:
        """``POST /api/chat/{id}/stop``: cancel the chat's active stream wherever it runs. 202
        ``{"chat_id", "stream_id", "status"}`` (status ``cancelled``, ``cancelling`` or
        ``ended``); 404 ``not_found`` when the chat has no stream."""
        scoped = self.app.scoped(request)
        try:
            chat_id = _chat_id(request)
            stopped = await stop_active(
                scoped, self.log, scoped.key_id, chat_id, ttl=self.index_ttl
            )
            if stopped is None:
                raise NotFound(f"chat {chat_id[:100]!r} has no stream to stop")
        except TokenwireError as exc:
            return error_response(exc)
        chat, status = stopped
        body: dict[str, Any] = {"chat_id": chat_id, "stream_id": chat.stream_id, "status": status}
        return JSONResponse(body, status_code=202)


def _chat_id(request: Request) -> str:
    chat_id: str = request.path_params["chat_id"]
    if not chat_id or len(chat_id) > MAX_CHAT_ID_LENGTH:
        raise InvalidRequest(
            f"chat id: 1 to {MAX_CHAT_ID_LENGTH} characters, got {len(chat_id)}", param="id"
        )
    return chat_id
