"""The collect transport: a non-streamed answer (``stream: false``) kept in memory.

:class:`CollectTransport` is a :class:`~tokenwire.transports.base.Transport` whose writes land
in lists; :func:`collect` runs the same :class:`~tokenwire.transports.pump.Pump` as the
streaming transports over it while it listens for the client's ``http.disconnect``, so that a
client that gives up stops the generation (it follows its disconnect policy, ``cancel`` by
default) instead of leaving it to run on.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive

from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    ReasoningDelta,
    StreamEnd,
    TextDelta,
    ToolCallEnd,
)
from tokenwire.streams.generation import Detach, Generation, GenerationState
from tokenwire.streams.registry import Attachment
from tokenwire.transports.base import Transport
from tokenwire.transports.pump import Delivery, Pump, stop_on_disconnect


class CollectTransport(Transport):
    """Keeps the events of one stream: its text, its reasoning, its complete tool calls (each
    ``tool_call.end``, which holds the whole arguments: the deltas add nothing), its ``error``
    (if any) and its ``stream.end``. Writes never wait and never fail."""

    name = "collect"

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: list[ToolCallEnd] = []
        self.error: ErrorEvent | None = None
        self.end: StreamEnd | None = None

    async def send_events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, TextDelta):
                self.text.append(event.delta)
            elif isinstance(event, ReasoningDelta):
                self.reasoning.append(event.delta)
            elif isinstance(event, ToolCallEnd):
                self.tool_calls.append(event)
            elif isinstance(event, ErrorEvent):
                self.error = event
            elif isinstance(event, StreamEnd):
                self.end = event

    async def send_heartbeat(self) -> None:
        """Nothing to keep alive: no byte is written until the answer is complete."""


async def collect(
    attachment: Attachment, receive: Receive, *, start: Generation | None = None
) -> CollectTransport | None:
    """Collect ``attachment``'s stream to its end (starting ``start`` once attached).

    Returns the collected events, or ``None`` when the client disconnected first: the
    attachment is then detached as ``disconnected`` and the generation follows its disconnect
    policy. Cancelling the caller detaches likewise.
    """
    transport = CollectTransport()
    return transport if await collect_into(transport, attachment, receive, start=start) else None


async def collect_into(
    transport: Transport,
    attachment: Attachment,
    receive: Receive,
    *,
    start: Generation | None = None,
) -> bool:
    """:func:`collect` into a transport of the caller's (a codec's collector): returns whether
    the stream was delivered to its end (False: the client disconnected first)."""
    delivery = Pump(attachment, transport)
    listener = asyncio.create_task(stop_on_disconnect(receive, delivery))
    if start is not None and start.state is GenerationState.CREATED:
        start.start()
    outcome: Detach = "disconnected"
    try:
        if await delivery.run() is Delivery.ENDED:
            outcome = "ended"
    finally:
        listener.cancel()
        attachment.detach(outcome)
    return outcome == "ended"
