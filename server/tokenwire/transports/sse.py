"""The SSE transport: one stream per HTTP response, framed per the WHATWG SSE rules.

:class:`SSETransport` writes frames; :class:`EventStreamResponse` is the ASGI response that runs
the :class:`~tokenwire.transports.pump.Pump` in its own task, with one more task that listens
for ``http.disconnect`` and a callback on the server's drain; either stops the pump. A
disconnect before ``stream.end`` (or a write that exceeds the send timeout) detaches the
subscription as ``disconnected``, so the generation follows its disconnect policy at once, also
while the provider is still waiting for its first token. An evicted slow consumer is sent
``error`` (slow_consumer) and ``stream.end`` once its pending write completes, and the
response ends.

The same response carries OpenAI ``chat.completion.chunk`` frames when given that codec.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
from starlette.types import Receive, Scope, Send

from tokenwire.lifecycle import server_send
from tokenwire.protocol import sse
from tokenwire.protocol.events import Event
from tokenwire.streams.generation import Detach, Generation, GenerationState
from tokenwire.streams.registry import Attachment, DrainSignal
from tokenwire.transports.base import Gauge, Transport, Write, coroutine_send
from tokenwire.transports.pump import Delivery, Pump, stop_on_disconnect

Encoder = Callable[[Event], bytes]


class SSETransport(Transport):
    """Writes SSE frames to an ASGI ``send`` (HTTP response body chunks)."""

    name = "sse"

    def __init__(self, send: Send, encode: Encoder = sse.encode_event) -> None:
        self._send = coroutine_send(send)
        self._encode = encode

    async def send_events(self, events: list[Event]) -> None:
        body = b"".join([self._encode(event) for event in events])
        if body:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})

    def send_event(self, event: Event) -> Write:
        body = self._encode(event)
        if not body:  # a codec may frame an event as nothing (OpenAI chunks: stream.resumed)
            return _nothing()
        return self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def send_heartbeat(self) -> None:
        await self._send({"type": "http.response.body", "body": sse.PING, "more_body": True})


class EventStreamResponse:
    """ASGI response streaming one attachment's events as ``text/event-stream``.

    ``start``, if given, is a new generation that the response starts once the consumer is
    attached, so that no event is missed. ``retry`` (milliseconds) is sent first as the
    client's reconnection delay (WHATWG SSE ``retry:`` field). ``heartbeat_interval`` is in
    seconds (``None``: no heartbeats); ``send_timeout`` and ``write_delay`` (seconds) are the
    :class:`~tokenwire.transports.pump.Pump`'s. ``connections``, if given, counts the response
    as open from its start to its end. When ``draining`` fires (the server shuts down), the
    response ends at once without ``stream.end``: the client reconnects after ``retry`` with
    its Last-Event-ID and resumes, on another worker.

    The response's own task runs the pump; one more task waits for ``http.disconnect``
    and, when it comes first, stops the pump. That is two tasks per open stream (besides the
    generation), the fewest that ASGI allows: only ``receive()`` reports a disconnect.
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
        write_delay: float = 0.0,
        draining: DrainSignal | None = None,
        headers: dict[str, str] | None = None,
        connections: Gauge | None = None,
    ) -> None:
        self.attachment = attachment
        self.start = start
        self.encode = encode
        self.retry = retry
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.write_delay = write_delay
        self.draining = draining
        self.headers = {**sse.HEADERS, **(headers or {})}
        self.connections = connections

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The response's headers as ASGI wants them; the common ones are encoded once per
        process, not per stream (the list lives as long as the stream)."""
        encoded = [
            _COMMON_HEADERS.get((name, value)) or (name.lower().encode(), value.encode())
            for name, value in self.headers.items()
        ]
        return [_CONTENT_TYPE, *encoded]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self.raw_headers()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.connections is not None:
            self.connections.inc()
        try:  # the body, past the wrappers that only watch the start (see server_send)
            await self._stream(receive, server_send(scope, send))
        finally:
            if self.connections is not None:
                self.connections.dec()

    async def _stream(self, receive: Receive, send: Send) -> None:
        if self.retry is not None:
            body = sse.encode_retry(self.retry)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        delivery = Pump(
            self.attachment,
            SSETransport(send, self.encode),
            heartbeat_interval=self.heartbeat_interval,
            send_timeout=self.send_timeout,
            write_delay=self.write_delay,
        )
        listener = asyncio.create_task(stop_on_disconnect(receive, delivery))
        # called soon if the drain has begun already: by then run() below is waiting
        unwatch = self.draining.watch(delivery.stop) if self.draining is not None else None
        if self.start is not None and self.start.state is GenerationState.CREATED:
            self.start.start()
        outcome: Detach = "disconnected"
        finish_response = False
        try:
            ended = await delivery.run()
            if ended is Delivery.STOPPED:  # the client left, or the server drains
                finish_response = self.draining is not None and self.draining.is_set()
            else:
                outcome = "evicted" if ended is Delivery.EVICTED else "ended"
                finish_response = True
        except OSError:  # the client went away, or stopped reading (send timeout)
            pass
        finally:
            listener.cancel()
            if unwatch is not None:
                unwatch()
            self.attachment.detach(outcome)
        if finish_response:
            with anyio.move_on_after(self.send_timeout):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        # else: the response stays incomplete and uvicorn closes the connection


_CONTENT_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")
_COMMON_HEADERS = {
    (name, value): (name.lower().encode(), value.encode()) for name, value in sse.HEADERS.items()
}


async def _nothing() -> None:
    pass
