"""The WebSocket transport: many streams multiplexed on one socket, JSON text frames.

:class:`WebSocketTransport` writes frames (whole frames, so the streams' writers need no lock);
:class:`WebSocketSession` is the connection's life: it reads client messages (``generate``,
``cancel``, ``resume``, ``ping``), runs one :func:`pump` task per stream, and on disconnect
detaches every consumer as ``disconnected`` so each generation follows its disconnect policy.
When the server drains, the socket is closed with 1012 (service restart): the client reconnects
and resumes each stream after its last seq.

A bad client message gets ``{"type":"error","code":"invalid_request",...}`` without a
stream_id, and the socket stays open. Close codes are listed in
:class:`tokenwire.protocol.websocket.CloseCode` (RFC 6455 section 7.4.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from tokenwire.errors import ErrorCode, InvalidRequest, TokenwireError
from tokenwire.lifecycle import server_send
from tokenwire.protocol import websocket as codec
from tokenwire.protocol.events import ErrorEvent, Event, StreamReset
from tokenwire.protocol.requests import (
    CancelMessage,
    ClientMessage,
    GenerateMessage,
    GenerateParams,
    PingMessage,
    ResumeMessage,
)
from tokenwire.settings import Settings
from tokenwire.streams.generation import Detach
from tokenwire.streams.log import CursorExpired, UnknownStream, reset_reason
from tokenwire.streams.registry import Attachment, Streams
from tokenwire.transports.base import Gauge, SendTimeout, Transport, Write, coroutine_send
from tokenwire.transports.pump import Delivery, pump

log = logging.getLogger("tokenwire.websocket")


class WebSocketTransport(Transport):
    """Writes JSON text frames to a Starlette WebSocket; safe to share between stream tasks.

    No lock: every send writes one whole frame (RFC 6455 section 5.4 forbids interleaving
    only the fragments of a message, and no message is fragmented here), so the frames of
    different streams may interleave, while each stream's own frames keep their order because
    one task writes them in turn.

    Frames go to the ASGI server's own ``send`` (see
    :func:`~tokenwire.lifecycle.server_send`), not through Starlette's ``WebSocket``:
    a client that is gone shows as the server's ``OSError`` (uvicorn's ``ClientDisconnected``),
    not as ``WebSocketDisconnect``.
    """

    name = "websocket"

    def __init__(self, websocket: WebSocket) -> None:
        self._send = coroutine_send(server_send(websocket.scope, websocket.send))

    async def send_events(self, events: list[Event]) -> None:
        for event in events:
            await self.send_event(event)

    def send_event(self, event: Event) -> Write:
        return self._send({"type": "websocket.send", "text": codec.encode_event(event)})

    async def send_heartbeat(self) -> None:
        """Nothing to send: liveness is the server's protocol-level ping/pong (RFC 6455 5.5.2)."""

    def send_text(self, text: str) -> Write:
        """Write one text frame (a reply to a client message)."""
        return self._send({"type": "websocket.send", "text": text})


Frames = Callable[[Event], list[str]]
"""A stream's codec for another wire protocol: the text frames (none, one or more) that stand
for one event."""


class FramesTransport(WebSocketTransport):
    """A :class:`WebSocketTransport` for one stream whose events another protocol's codec
    frames (``frames``, e.g. the OpenAI Responses encoder's JSON events), on the same socket as
    any other stream: frames are whole, so several such transports share a socket unlocked."""

    def __init__(self, websocket: WebSocket, frames: Frames) -> None:
        super().__init__(websocket)
        self._frames = frames

    def send_event(self, event: Event) -> Write:
        texts = self._frames(event)
        if len(texts) == 1:
            return self.send_text(texts[0])
        return self._send_texts(texts)

    async def _send_texts(self, texts: list[str]) -> None:
        for text in texts:
            await self.send_text(text)


class WebSocketSession:
    """One client socket: reads its messages and delivers its streams until it closes.

    Close codes sent: 1000 after the client's own close; 1012 when the server drains; 4008 when
    the client did not keep up (a subscription was evicted as a slow consumer, or a write,
    a stream's or a reply's (``pong``, ``error``, ``stream.reset``), exceeded the send
    timeout). uvicorn itself sends 1009 for a message over the size limit and
    1011 when pings go unanswered.
    """

    def __init__(
        self,
        websocket: WebSocket,
        registry: Streams,
        settings: Settings,
        *,
        limit_params: Callable[[GenerateParams], GenerateParams],
        connections: Gauge | None = None,
    ) -> None:
        self.websocket = websocket
        self.connections = connections
        self.registry = registry
        self.settings = settings
        self.transport = WebSocketTransport(websocket)
        self._limit_params = limit_params
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._close_code: int | None = None
        self._task: asyncio.Task[None] | None = None  # the one that runs run()
        self._reading = False
        self._cut = False  # _cut_off() cancelled the read

    async def run(self) -> None:
        """Accept, serve messages until the client disconnects or is cut off, then detach
        every stream (each follows its disconnect policy). Reading happens in the calling
        task; a cut-off (slow consumer, drain) cancels that read."""
        offered = self.websocket.scope.get("subprotocols") or ()
        await self.websocket.accept(
            subprotocol=codec.SUBPROTOCOL if codec.SUBPROTOCOL in offered else None
        )
        if self.connections is not None:
            self.connections.inc()
        try:
            await self._serve()
        finally:
            if self.connections is not None:
                self.connections.dec()

    async def _serve(self) -> None:
        self._task = asyncio.current_task()
        unwatch = self.registry.draining.watch(self._drain)
        self._reading = True
        try:
            await self._read()
        except asyncio.CancelledError:
            if not self._cut or self._task is None:
                raise  # not ours: the server cancels the connection
            self._task.uncancel()
        finally:
            self._reading = False
            unwatch()
            await self._detach_all()
            await self._close()

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    return
                data = frame.get("text")
                if data is None:
                    data = frame.get("bytes") or b""
                await self._handle(data)
        except SendTimeout:
            self._close_code = self._close_code or codec.CloseCode.SLOW_CONSUMER
        except (WebSocketDisconnect, OSError):
            return

    async def _handle(self, data: str | bytes) -> None:
        try:
            message = codec.decode_client_message(data)
            await self._dispatch(message)
        except TokenwireError as exc:
            await self._send_error(exc.code, exc.message, exc.retryable)

    async def _dispatch(self, message: ClientMessage) -> None:
        if isinstance(message, GenerateMessage):
            self._generate(message)
        elif isinstance(message, CancelMessage):
            # wherever the stream runs (another worker: through the log's control channel);
            # its stream.end reaches the sockets that deliver it
            await self.registry.cancel_anywhere(message.stream_id)
        elif isinstance(message, PingMessage):
            await self._reply(codec.encode_pong(message.id))
        elif isinstance(message, ResumeMessage):
            await self._resume(message)

    def _generate(self, message: GenerateMessage) -> None:
        # Field by field, not through a dump: a dump would lose what a message keeps beside
        # its JSON fields (image parts, a null content).
        fields = {name: getattr(message, name) for name in GenerateParams.model_fields}
        params = self._limit_params(GenerateParams.model_validate(fields))
        generation = self.registry.create(
            params, transport=self.transport.name, request_id=message.request_id
        )
        self._deliver_in_task(self.registry.attach(generation))
        generation.start()

    async def _resume(self, message: ResumeMessage) -> None:
        """Continue ``message.stream_id`` after ``message.after_seq`` on this socket. An
        unserveable cursor gets ``stream.reset``; a stream already delivered on this socket is
        an invalid request (it would be delivered twice)."""
        if message.stream_id in self._streams:
            raise InvalidRequest(f"stream {message.stream_id} is already delivered on this socket")
        try:
            attachment = await self.registry.resume(message.stream_id, message.after_seq)
        except (UnknownStream, CursorExpired) as exc:
            reset = StreamReset(stream_id=message.stream_id, reason=reset_reason(exc))
            await self._reply(codec.encode_event(reset))
            return
        self._deliver_in_task(attachment)

    def _deliver_in_task(
        self, attachment: Attachment, transport: Transport | None = None, *, key: str | None = None
    ) -> asyncio.Task[None]:
        """Deliver ``attachment`` in a task of its own, through ``transport`` (default: this
        socket's wire protocol v1 frames); the task is this socket's delivery ``key`` (default:
        the stream id; a protocol that may deliver one stream twice on a socket, to two of its
        requests, keys by request) until it is over."""
        key = attachment.stream_id if key is None else key
        task = asyncio.create_task(self._deliver(attachment, transport or self.transport, key))
        self._streams[key] = task
        return task

    def _delivered(self, attachment: Attachment) -> None:
        """Called once a stream's delivery is over (ended, evicted, or the socket is gone),
        after its detach; a hook for sessions of other protocols. Must not raise."""

    async def _deliver(self, attachment: Attachment, transport: Transport, key: str) -> None:
        outcome: Detach = "disconnected"
        try:
            delivery = await pump(
                attachment,
                transport,
                send_timeout=self.settings.send_timeout,
                write_delay=self.settings.write_delay,
            )
            outcome = "evicted" if delivery is Delivery.EVICTED else "ended"
        except SendTimeout:
            self._cut_off(codec.CloseCode.SLOW_CONSUMER)
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the socket is gone; the reader sees the disconnect and cleans up
        finally:
            self._streams.pop(key, None)
            attachment.detach(outcome)
            self._delivered(attachment)
        if outcome == "evicted":
            self._cut_off(codec.CloseCode.SLOW_CONSUMER)

    def _drain(self) -> None:
        self._cut_off(codec.CloseCode.SERVICE_RESTART)

    def _cut_off(self, code: int) -> None:
        """Close the socket with ``code`` (the first code asked for wins): stop reading."""
        if self._close_code is None:
            self._close_code = code
        if self._reading and not self._cut and self._task is not None:
            self._cut = True
            self._task.cancel()

    async def _send_error(self, code: ErrorCode, message: str, retryable: bool) -> None:
        event = ErrorEvent(code=code, message=message, retryable=retryable)
        await self._reply(codec.encode_event(event))

    async def _reply(self, text: str) -> None:
        """Send a reply to a client message, within ``send_timeout`` seconds. Raises
        :class:`SendTimeout`: the client sends but does not read (the read loop then stops
        and the socket is closed with 4008)."""
        try:
            async with asyncio.timeout(self.settings.send_timeout):
                await self.transport.send_text(text)
        except TimeoutError:
            raise SendTimeout(f"a reply took longer than {self.settings.send_timeout} s") from None

    async def _detach_all(self) -> None:
        tasks = list(self._streams.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self) -> None:
        if self.websocket.application_state is not WebSocketState.CONNECTED:
            return
        try:  # bounded: a peer that reads nothing may never take the close frame
            async with asyncio.timeout(self.settings.send_timeout):
                await self.websocket.close(self._close_code or codec.CloseCode.NORMAL)
        except (TimeoutError, RuntimeError, OSError, WebSocketDisconnect):
            pass  # the peer is gone already: nothing left to close
