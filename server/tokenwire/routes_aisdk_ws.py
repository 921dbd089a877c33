"""``GET /api/chat/ws``: a server for the AI SDK's ``WebSocketChatTransport`` (``ai`` 7.0.173,
``packages/ai/src/ui/websocket-chat-transport.ts``), over the same Generation, stream log, chat
index and pump as ``POST /api/chat``; the frames are :mod:`tokenwire.protocol.aisdk_ws`'s, the
chunks :class:`~tokenwire.protocol.aisdk.UIMessageEncoder`'s.

On one socket, many requests at once, each named by the client's ``requestId``:

- ``send``: the body that ``DefaultChatTransport`` would POST (``id``, ``messages``,
  ``trigger``, ``messageId`` and the ``body`` fields), checked and converted as on
  ``POST /api/chat``; the chat's new stream becomes its active one in the chat index, and its
  chunks follow as ``chunk`` frames numbered 0, 1, 2..., then ``end``. A refused request (bad
  messages, a field the provider cannot honour, a limit) gets ``error{errorText}``; a failure
  of the generation travels in-band as the ``error`` chunk, then ``finish``/``end``.
- ``resume``: ``start``, then the chat's active stream from its first chunk (or after
  ``lastSequence``, see the numbering in :mod:`tokenwire.protocol.aisdk_ws`), then live, then
  ``end``; ``no-active`` when the chat has none (never had one, it has ended, the log no longer
  keeps it, or it is another API key's chat: the index is per key, so another key's chat is
  indistinguishable from none, as on ``GET /api/chat/{id}/stream``'s 204).
- ``abort``: of a ``send``, cancels the generation wherever it runs (``stop()`` of the SDK's
  ``Chat`` aborts the request, and the reference server of the SDK's documentation aborts the
  model on it); of a ``resume``, ends that replay only and the generation runs on: a resume is
  a reader, and the SDK aborts resumes for its own reasons (``Chat`` aborts a pending resume
  when it starts another, and cancels a resumed stream it no longer wants). To stop a resumed
  chat, ``POST /api/chat/{id}/stop``.

A socket that drops detaches its streams: a chat's generation runs on (detach policy) for a
resume on any worker. A bad frame (not JSON, an unknown ``type``, a missing field) gets
``error{requestId, errorText}`` (``requestId`` ``""`` when the frame had none; ``errorText``
is ``"<code>: <message>"``, the code one of tokenwire's: ``invalid_request``,
``rate_limited``, ``unavailable``...) and the socket stays open, with every other request
going on. Authentication (``Authorization``, the
``token`` query parameter, a token offered as a subprotocol beside ``tokenwire``, or the
``tokenwire_token`` cookie), the Origin allowlist, the connection and message limits and the
close codes (1000, 1009, 1012, 1013, 4008) are the edge's and :class:`WebSocketSession`'s, as
on ``/v1/ws``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from tokenwire.chats import open_active
from tokenwire.errors import InvalidRequest, TokenwireError
from tokenwire.protocol import aisdk_ws as frames
from tokenwire.protocol.aisdk import ChatRequest, UIMessageEncoder, new_message_id
from tokenwire.protocol.events import Event, StreamEnd
from tokenwire.streams.registry import Attachment
from tokenwire.transports.websocket import FramesTransport, WebSocketSession

if TYPE_CHECKING:
    from tokenwire.edge.limits import ScopedRegistry
    from tokenwire.routes_aisdk import ChatRoutes


class ChunkTransport(FramesTransport):
    """The :class:`FramesTransport` of one request: its frames are numbered per log event,
    so the pump must not merge deltas (see :mod:`tokenwire.protocol.aisdk_ws`)."""

    merges_deltas = False


@dataclass(slots=True)
class _Request:
    """One request of the socket in delivery."""

    kind: str  # "send" or "resume"
    chat_id: str
    stream_id: str
    task: asyncio.Task[None] | None = None


class ChatSocketSession(WebSocketSession):
    """One ``/api/chat/ws`` socket: :class:`WebSocketSession`'s life (reading, one pump task
    per request, detach on disconnect, drain, slow consumers), with the
    ``WebSocketChatTransport`` frames (see the module docstring)."""

    def __init__(self, routes: ChatRoutes, websocket: WebSocket) -> None:
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
        self._requests: dict[str, _Request] = {}

    async def _handle(self, data: str | bytes) -> None:
        request_id = ""
        try:
            frame = frames.decode_frame(data)
            request_id = frame.requestId
            if isinstance(frame, frames.AbortFrame):
                await self._abort(frame.requestId)
                return
            if frame.requestId in self._requests:
                raise InvalidRequest(f"requestId {frame.requestId!r} is already in progress")
            if isinstance(frame, frames.SendFrame):
                await self._send_chat(frame)
            else:
                await self._resume_chat(frame)
        except frames.FrameError as exc:
            await self._reply(frames.error_frame(exc.request_id, f"{exc.code}: {exc.message}"))
        except TokenwireError as exc:  # refused, a limit, the log unavailable
            await self._reply(frames.error_frame(request_id, f"{exc.code}: {exc.message}"))

    async def _send_chat(self, frame: frames.SendFrame) -> None:
        body = ChatRequest.parse(frame.chat_request())
        generation, message_id = await self.routes.start(self.scoped, body, transport="aisdk-ws")
        request = _Request("send", frame.id, generation.stream_id)
        self._deliver_request(frame.requestId, request, self.scoped.attach(generation), message_id)
        generation.start()

    async def _resume_chat(self, frame: frames.ResumeFrame) -> None:
        found = await open_active(
            self.scoped, self.routes.log, self.scoped.key_id, frame.id, ttl=self.routes.index_ttl
        )
        if found is None:
            await self._reply(frames.no_active_frame(frame.requestId))
            return
        chat, attachment = found
        await self._reply(frames.start_frame(frame.requestId))
        after = -1 if frame.lastSequence is None else frame.lastSequence
        request = _Request("resume", frame.id, chat.stream_id)
        self._deliver_request(
            frame.requestId, request, attachment, chat.message_id or new_message_id(), after=after
        )

    def _deliver_request(
        self,
        request_id: str,
        request: _Request,
        attachment: Attachment,
        message_id: str,
        *,
        after: int = -1,
    ) -> None:
        """Deliver ``attachment`` to ``request_id``: its chunks numbered by a fresh encoder,
        then ``end`` after ``stream.end``."""
        numbering = frames.ChunkNumbering(
            request_id, UIMessageEncoder(message_id).encode, after=after
        )

        def encode(event: Event) -> list[str]:
            out = numbering.frames(event)
            if isinstance(event, StreamEnd):
                out.append(frames.end_frame(request_id))
            return out

        self._requests[request_id] = request
        transport = ChunkTransport(self.websocket, encode)
        request.task = self._deliver_in_task(attachment, transport, key=request_id)
        request.task.add_done_callback(lambda _: self._forget(request_id, request))

    def _forget(self, request_id: str, request: _Request) -> None:
        if self._requests.get(request_id) is request:
            del self._requests[request_id]

    async def _abort(self, request_id: str) -> None:
        """End request ``request_id``'s delivery; a send's generation is cancelled first. An
        unknown or finished request: nothing to do (the SDK sends ``abort`` whenever its
        stream is cancelled, also after the end)."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return
        if request.kind == "send":
            await self.scoped.cancel_anywhere(request.stream_id)
        if request.task is not None:
            request.task.cancel()


class ChatSocketRoute:
    """``GET /api/chat/ws`` beside the HTTP routes of one :class:`ChatRoutes` (see
    :class:`ChatSocketSession`)."""

    def __init__(self, routes: ChatRoutes) -> None:
        self.routes = routes

    async def websocket(self, websocket: WebSocket) -> None:
        await ChatSocketSession(self.routes, websocket).run()
