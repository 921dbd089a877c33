"""The Transport interface: what a delivery loop needs of a client connection.

A transport moves already-decided events onto the wire and makes no decisions of its own
(those are :class:`~tokenwire.transports.delivery.DeliveryState`'s, and the loop that drives
it is :mod:`tokenwire.transports.pump`). Implementations: :mod:`.sse` (one stream per HTTP
response), :mod:`.websocket` (many streams on one socket) and :mod:`.collect` (a non-streamed
answer kept in memory).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Protocol

from starlette.types import Message, Send

from tokenwire.protocol.events import Event

Write = Coroutine[Any, Any, None]
"""One write in progress: a coroutine that the pump may drive step by step."""

CoroutineSend = Callable[[Message], Write]
"""An ASGI ``send`` whose every call returns a coroutine (see :func:`coroutine_send`)."""


def coroutine_send(send: Send) -> CoroutineSend:
    """``send`` itself when it is a coroutine function (uvicorn's, Starlette's wrappers'),
    else ``send`` inside one: ASGI only promises an awaitable, and the pump needs a coroutine
    to drive (see :meth:`Transport.send_event`)."""
    if inspect.iscoroutinefunction(send):
        return send

    async def awaiting(message: Message) -> None:
        await send(message)

    return awaiting


class Transport(ABC):
    """Writes events of one or more streams to one client connection."""

    name: ClassVar[str]
    merges_deltas: ClassVar[bool] = True
    """Whether the pump may merge a batch's adjacent deltas into one event before writing it
    (fewer, larger writes). A wire that numbers what each log event stands for, and so must
    see every event as the log holds it, says no (the AI SDK's WebSocket chunks)."""

    @abstractmethod
    async def send_events(self, events: list[Event]) -> None:
        """Write ``events`` (one stream's, in order) as one write where the framing allows.

        Raises ``OSError`` (or the server's subclass of it) if the client is gone.
        """

    def send_event(self, event: Event) -> Write:
        """Write one event, as ``send_events([event])`` does: returns the write's coroutine.

        A plain method, not a coroutine function, so that a transport can hand back its
        server's own ``send`` coroutine (ASGI servers' ``send`` is a coroutine function) with
        no frame of its own in between: nearly every write of a stream is one event. The pump
        may drive that coroutine a first step in the producer's task (see
        :class:`~tokenwire.transports.pump.Pump`), so it must be a real coroutine.
        """
        return self.send_events([event])

    @abstractmethod
    async def send_heartbeat(self) -> None:
        """Keep an idle connection open (SSE: a ``: ping`` comment)."""


class Gauge(Protocol):
    """What counts a transport's open connections (e.g. a Prometheus gauge's labelled child)."""

    def inc(self) -> None: ...

    def dec(self) -> None: ...


class SendTimeout(TimeoutError):
    """A write did not complete within the send timeout: the client is not reading.

    A ``TimeoutError``, and so an ``OSError``: transports treat it as a lost client."""
