"""The SSE transport: one stream per HTTP response, framed per the WHATWG SSE rules.

:class:`SSETransport` writes frames; :class:`EventStreamResponse` is the ASGI response that runs,
in one task group, the :func:`pump` and a listener for ``http.disconnect``. Whichever finishes
first cancels the other. A disconnect before ``stream.end`` (or a write that exceeds the send
timeout) detaches the subscription as ``disconnected``, so the generation follows its disconnect
policy at once, also while the provider is still waiting for its first token. An evicted slow
consumer is sent ``error`` (slow_consumer) and ``stream.end`` once its pending write completes,
and the response ends.

The same response carries OpenAI ``chat.completion.chunk`` frames when given that codec.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from starlette.types import Receive, Scope, Send

from tokenwire.protocol import sse
from tokenwire.protocol.events import Event
from tokenwire.streams.generation import Detach, Generation, GenerationState
from tokenwire.streams.subscription import Subscription
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
    """ASGI response streaming one generation's events as ``text/event-stream``.

    The generation is started by the response once the subscription exists, so no event is
    missed. ``heartbeat_interval`` is in seconds (``None``: no heartbeats).
    """

    def __init__(
        self,
        generation: Generation,
        subscription: Subscription,
        *,
        encode: Encoder = sse.encode_event,
        heartbeat_interval: float | None = 15.0,
        send_timeout: float | None = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.generation = generation
        self.subscription = subscription
        self.encode = encode
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.headers = {**sse.HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        transport = SSETransport(send, self.encode)
        outcome: Detach = "disconnected"

        async with anyio.create_task_group() as group:

            async def deliver() -> None:
                nonlocal outcome
                try:
                    delivery = await pump(
                        self.generation,
                        self.subscription,
                        transport,
                        heartbeat_interval=self.heartbeat_interval,
                        send_timeout=self.send_timeout,
                    )
                    outcome = "evicted" if delivery is Delivery.EVICTED else "ended"
                except OSError:  # the client went away, or stopped reading (send timeout)
                    pass
                group.cancel_scope.cancel()

            async def listen_for_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(deliver)
            group.start_soon(listen_for_disconnect)
            if self.generation.state is GenerationState.CREATED:
                self.generation.start()
        self.generation.unsubscribe(self.subscription, outcome)
        if outcome != "disconnected":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # else: the response stays incomplete and uvicorn closes the connection
