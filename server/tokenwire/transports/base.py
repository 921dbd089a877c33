"""The Transport interface and the one delivery loop that every transport runs.

A transport moves already-decided events onto the wire; it makes no decisions of its own.
:func:`pump` is the shared loop: it drains a :class:`Subscription` in batches (whatever is queued
goes out in one write), sends a heartbeat whenever the stream has been idle for
``heartbeat_interval`` seconds (also before the first token), and returns after ``stream.end``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import ClassVar

from tokenwire.protocol.events import Event
from tokenwire.streams.subscription import Subscription, ends_stream


class Transport(ABC):
    """Writes events of one or more streams to one client connection."""

    name: ClassVar[str]

    @abstractmethod
    async def send_events(self, events: list[Event]) -> None:
        """Write ``events`` (one stream's, in order) as one write where the framing allows.

        Raises ``OSError`` (or the server's subclass of it) if the client is gone.
        """

    @abstractmethod
    async def send_heartbeat(self) -> None:
        """Keep an idle connection open (SSE: a ``: ping`` comment)."""


async def pump(
    subscription: Subscription,
    transport: Transport,
    *,
    heartbeat_interval: float | None = None,
) -> None:
    """Deliver ``subscription``'s events through ``transport`` until ``stream.end`` is written.

    Cancelling it is safe: no queued event is lost from the subscription (the caller decides
    what a cancel means for the generation). A heartbeat goes out after each
    ``heartbeat_interval`` seconds (``None``: never) without an event.
    """
    while True:
        try:
            async with asyncio.timeout(heartbeat_interval):
                batch = await subscription.get_batch()
        except TimeoutError:
            await transport.send_heartbeat()
            continue
        if not batch:  # evicted: the caller reports it
            return
        await transport.send_events(batch)
        if ends_stream(batch):
            return
