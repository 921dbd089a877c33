"""The Transport interface and the one delivery loop that every transport runs.

A transport moves already-decided events onto the wire; it makes no decisions of its own.
:func:`pump` is the shared loop: it sends an attachment's catch-up, then drains its
:class:`~tokenwire.streams.subscription.Subscription` in batches (whatever is queued
goes out in one write), sends a heartbeat whenever the stream has been idle for
``heartbeat_interval`` seconds (also before the first token), bounds every write by
``send_timeout`` seconds, and returns after ``stream.end``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from enum import StrEnum
from typing import ClassVar

from tokenwire.errors import ErrorCode
from tokenwire.metrics import delivery_observer
from tokenwire.protocol.events import ErrorEvent, Event, FinishReason, StreamEnd, Usage
from tokenwire.streams.registry import Attachment
from tokenwire.streams.subscription import ends_stream


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


class SendTimeout(TimeoutError):
    """A write did not complete within the send timeout: the client is not reading.

    A ``TimeoutError``, and so an ``OSError``: transports treat it as a lost client."""


class Delivery(StrEnum):
    """How :func:`pump` ended."""

    ENDED = "ended"  # stream.end was written
    EVICTED = "evicted"  # the consumer was too slow (overflow=disconnect); it was told so


async def _bounded(write: Awaitable[None], send_timeout: float | None) -> None:
    try:
        async with asyncio.timeout(send_timeout):
            await write
    except TimeoutError as exc:
        raise SendTimeout(f"a write took longer than {send_timeout} s") from exc


def eviction_events(stream_id: str, cursor: int, usage: Usage | None) -> list[Event]:
    """What an evicted consumer is told: ``error`` (slow_consumer, retryable) and a
    ``stream.end`` (finish_reason error, ``usage`` so far). Both carry ``cursor``, the seq of
    the last event the consumer was sent, so that resuming after either loses nothing."""
    message = "the client did not keep up with the stream; resume after the last seq seen"
    return [
        ErrorEvent(
            stream_id=stream_id,
            seq=cursor,
            code=ErrorCode.SLOW_CONSUMER,
            message=message,
            retryable=True,
        ),
        StreamEnd(stream_id=stream_id, seq=cursor, finish_reason=FinishReason.ERROR, usage=usage),
    ]


CATCH_UP_BATCH = 256
"""Catch-up events per write: a long replay goes out in bounded writes, each under the send
timeout."""


async def pump(
    attachment: Attachment,
    transport: Transport,
    *,
    heartbeat_interval: float | None = None,
    send_timeout: float | None = None,
) -> Delivery:
    """Deliver ``attachment``'s events through ``transport`` until ``stream.end`` is written:
    its catch-up first (at most :data:`CATCH_UP_BATCH` events per write), then its subscription.

    Raises :class:`SendTimeout` (an ``OSError``) when a write takes longer than
    ``send_timeout`` seconds, and the transport's ``OSError`` when the client is gone.
    Cancelling it is safe: no queued event is lost from the subscription (the caller decides
    what a cancel means for the generation). A heartbeat goes out after each
    ``heartbeat_interval`` seconds (``None``: never) without an event.
    """
    cursor = 0
    catch_up = attachment.catch_up
    for start in range(0, len(catch_up), CATCH_UP_BATCH):
        batch = catch_up[start : start + CATCH_UP_BATCH]
        await _bounded(transport.send_events(batch), send_timeout)
        cursor = _last_seq(batch, cursor)
        if ends_stream(batch):
            return Delivery.ENDED
    subscription = attachment.subscription
    if subscription is None:
        return Delivery.ENDED
    observer = delivery_observer(attachment)  # metrics hook
    while True:
        try:
            async with asyncio.timeout(heartbeat_interval):
                batch = await subscription.get_batch()
        except TimeoutError:
            await _bounded(transport.send_heartbeat(), send_timeout)
            continue
        if not batch:
            ending = eviction_events(attachment.stream_id, cursor, attachment.usage_so_far())
            await _bounded(transport.send_events(ending), send_timeout)
            observer.evicted()  # metrics hook
            return Delivery.EVICTED
        await _bounded(transport.send_events(batch), send_timeout)
        observer.sent(batch)  # metrics hook
        cursor = _last_seq(batch, cursor)
        if ends_stream(batch):
            return Delivery.ENDED


def _last_seq(batch: list[Event], cursor: int) -> int:
    return getattr(batch[-1], "seq", None) or cursor
