"""The SSE transport: one stream per HTTP response, framed per the WHATWG SSE rules.

:class:`SSETransport` writes frames; :class:`EventStreamResponse` is the ASGI response that runs,
in one task group, the :func:`pump`, a listener for ``http.disconnect`` and a watch on the
server's drain. Whichever finishes
first cancels the other. A disconnect before ``stream.end`` (or a write that exceeds the send
timeout) detaches the subscription as ``disconnected``, so the generation follows its disconnect
policy at once, also while the provider is still waiting for its first token. An evicted slow
consumer is sent ``error`` (slow_consumer) and ``stream.end`` once its pending write completes,
and the response ends.

The same response carries OpenAI ``chat.completion.chunk`` frames when given that codec.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
from starlette.types import Receive, Scope, Send

from tokenwire.protocol import sse
from tokenwire.protocol.events import Event
from tokenwire.streams.generation import Detach, Generation, GenerationState
from tokenwire.streams.registry import Attachment
from tokenwire.transports.base import Delivery, Transport, pump

Encoder = Callable[[Event], bytes]


class SSETransport(Transport):
    """Writes SSE frames to an ASGI ``send`` (HTTP response body chunks)."""

    name = "sse"

    def __init__(self, send: Send, encode: Encoder = sse.encode_event) -> None:
        self._send = send
        self._encode = encode

    async def send_events(self, events: list[Event]) -> None:
        body = b"".join(self._encode(event) for event in events)
        if body:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def send_heartbeat(self) -> None:
        await self._send({"type": "http.response.body", "body": sse.PING, "more_body": True})


class EventStreamResponse:
    """ASGI response streaming one attachment's events as ``text/event-stream``.

    ``start``, if given, is a new generation that the response starts once the consumer is
    attached, so that no event is missed. ``retry`` (milliseconds) is sent first as the
    client's reconnection delay (WHATWG SSE ``retry:`` field). ``heartbeat_interval`` is in
    seconds (``None``: no heartbeats). When ``draining`` is set (the server shuts down), the
    response ends at once without ``stream.end``: the client reconnects after ``retry`` with
    its Last-Event-ID and resumes, on another worker.
    """

    def __init__(
        self,
        attachment: Attachment,
        *,
        start: Generation | None = None,
        encode: Encoder = sse.encode_event,
        retry: int | None = None,
        heartbeat_interval: float | None = 15.0,
        send_timeout: float | None = 30.0,
        draining: asyncio.Event | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.attachment = attachment
        self.start = start
        self.encode = encode
        self.retry = retry
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.draining = draining
        self.headers = {**sse.HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        if self.retry is not None:
            body = sse.encode_retry(self.retry)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        transport = SSETransport(send, self.encode)
        outcome: Detach = "disconnected"
        finish_response = False

        async with anyio.create_task_group() as group:

            async def deliver() -> None:
                nonlocal outcome, finish_response
                try:
                    delivery = await pump(
                        self.attachment,
                        transport,
                        heartbeat_interval=self.heartbeat_interval,
                        send_timeout=self.send_timeout,
                    )
                    outcome = "evicted" if delivery is Delivery.EVICTED else "ended"
                    finish_response = True
                except OSError:  # the client went away, or stopped reading (send timeout)
                    pass
                group.cancel_scope.cancel()

            async def listen_for_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            async def drain() -> None:
                nonlocal finish_response
                assert self.draining is not None
                await self.draining.wait()
                finish_response = True
                group.cancel_scope.cancel()

            group.start_soon(deliver)
            group.start_soon(listen_for_disconnect)
            if self.draining is not None:
                group.start_soon(drain)
            if self.start is not None and self.start.state is GenerationState.CREATED:
                self.start.start()
        self.attachment.detach(outcome)
        if finish_response:
            with anyio.move_on_after(self.send_timeout):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        # else: the response stays incomplete and uvicorn closes the connection
