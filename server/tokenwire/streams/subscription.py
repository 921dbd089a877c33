"""Subscription: one consumer's bounded view of a stream, an ``asyncio.Queue(maxsize)``.

The producer (a :class:`~tokenwire.streams.generation.Generation`) calls :meth:`put`; the
transport calls :meth:`get_batch`, which waits for at least one event and then takes whatever
else is queued, so that a transport can write a burst in one go. When the queue is full,
the overflow policy decides:

- ``block``: :meth:`put` waits until the consumer makes room (and so the provider waits);
- ``coalesce``: text deltas that do not fit merge into one pending delta (lossless; its seq is
  the last merged one's), delivered as soon as there is room; other events wait as in ``block``;
- ``disconnect``: if the queue stays full for ``evict_after`` seconds, the subscription is
  evicted: :attr:`evicted` is set, ``on_evicted`` is called at once (the generation detaches
  it), and the consumer's next :meth:`get_batch` returns ``[]``, upon which its transport sends
  ``error`` (slow_consumer, retryable) and ``stream.end``.

Memory held for a consumer that never reads is bounded by ``maxsize`` events plus, under
``coalesce``, one pending delta (whose text grows with what the provider produces, bounded by
the stream's max_tokens).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tokenwire.protocol.events import Event, StreamEnd, TextDelta
from tokenwire.settings import OverflowPolicy

_NUDGE: Any = object()
"""Queued by :meth:`Subscription.nudge` to wake the consumer; never delivered."""


class Subscription:
    """A bounded, policy-governed queue of events between one stream and one consumer."""

    def __init__(
        self,
        stream_id: str,
        *,
        maxsize: int = 64,
        overflow: OverflowPolicy = OverflowPolicy.BLOCK,
        evict_after: float = 5.0,
        on_evicted: Callable[[Subscription], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.stream_id = stream_id
        self.overflow = overflow
        self.evict_after = evict_after
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.closed = False
        self.evicted = False
        self.coalesced = 0  # deltas merged into another (for metrics)
        self._pending: TextDelta | None = None  # coalesce: the merged overflow delta
        self._room = asyncio.Event()  # set whenever the consumer takes something
        self._on_evicted = on_evicted
        self._nudged = False  # a _NUDGE marker is queued

    @property
    def depth(self) -> int:
        """Events waiting for the consumer (including a pending coalesced delta)."""
        return self.queue.qsize() + (self._pending is not None)

    async def put(self, event: Event) -> None:
        """Hand ``event`` to the consumer under the overflow policy.

        Returns at once after the subscription was closed or evicted (the event is dropped:
        nobody will read it). Cancelling a waiting ``put`` is safe: the event was not queued.
        """
        if self.closed or self.evicted:
            return
        if self._pending is None and not self.queue.full():  # the common case: no await
            self.queue.put_nowait(event)
            return
        if self.overflow is OverflowPolicy.COALESCE:
            await self._put_coalescing(event)
        elif self.overflow is OverflowPolicy.DISCONNECT:
            await self._put_or_evict(event)
        else:
            await self.queue.put(event)

    async def _put_coalescing(self, event: Event) -> None:
        if isinstance(event, TextDelta) and (self._pending is not None or self.queue.full()):
            if self._pending is None:
                self._pending = event
            else:
                self._pending = TextDelta(
                    stream_id=event.stream_id,
                    seq=event.seq,
                    delta=self._pending.delta + event.delta,
                )
                self.coalesced += 1
            return
        while self._pending is not None:  # keep order: the pending delta goes first
            if self.closed:
                return
            await self._wait_for_room()
            self._flush_pending()
        await self.queue.put(event)

    def _flush_pending(self) -> None:
        if self._pending is not None and not self.queue.full():
            self.queue.put_nowait(self._pending)
            self._pending = None

    async def _wait_for_room(self) -> None:
        self._room.clear()
        await self._room.wait()

    async def _put_or_evict(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)  # the common case costs no timer
            return
        except asyncio.QueueFull:
            pass
        try:
            async with asyncio.timeout(self.evict_after):
                await self.queue.put(event)
        except TimeoutError:
            self.evicted = True
            if self._on_evicted is not None:  # at once, not when the blocked writer wakes
                self._on_evicted(self)

    async def get_batch(self) -> list[Event]:
        """Wait for at least one event, then take every event already queued.

        Returns ``[]`` after :meth:`nudge` (nothing to send: a heartbeat is due) and, at once,
        after eviction (the queue only fills while the consumer is not waiting here, so no
        wake-up is needed); :attr:`evicted` tells the two apart. Cancelling it is safe: no
        event is lost.
        """
        if self.evicted:
            return []
        queue = self.queue
        if queue.empty():
            self._flush_pending()
        batch = [queue.get_nowait() if not queue.empty() else await queue.get()]
        while not queue.empty():
            batch.append(queue.get_nowait())
        self._flush_pending()
        self._room.set()
        if self._nudged:
            self._nudged = False
            batch = [event for event in batch if event is not _NUDGE]
        return batch

    def nudge(self) -> None:
        """Wake a consumer waiting in :meth:`get_batch` with nothing to deliver (it returns
        ``[]``): how a delivery loop learns that a heartbeat is due without a timer per wait."""
        if self.queue.empty():
            self._nudged = True
            self.queue.put_nowait(_NUDGE)

    def close(self) -> None:
        """Stop accepting events (the consumer is gone). Idempotent."""
        self.closed = True
        self._room.set()


def ends_stream(batch: list[Event]) -> bool:
    """Whether ``batch`` holds the stream's final event."""
    return any(isinstance(event, StreamEnd) for event in batch)
