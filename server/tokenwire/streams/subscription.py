"""Subscription: one consumer's bounded view of a stream, a queue of at most ``maxsize`` events.

One producer (a :class:`~tokenwire.streams.generation.Generation`, or the task that feeds a
resumed consumer from the stream log) calls :meth:`offer` and, when that returns ``False``,
awaits :meth:`put`; one consumer (a transport's delivery loop) calls :meth:`get_batch`, which
waits for at least one event and then takes everything queued, so that a burst goes out in
one write. When the queue is full, the overflow policy decides:

- ``block``: :meth:`put` waits until the consumer makes room (and so the provider waits);
- ``coalesce``: deltas that do not fit merge into one pending delta (lossless; its seq is the
  last merged one's), delivered as soon as there is room. Only a delta of the pending one's
  kind merges (text with text, reasoning with reasoning, a tool call's arguments with the same
  call's: :func:`~tokenwire.protocol.events.same_run`), so nothing reorders; any other event,
  and a delta of another kind, waits as in ``block``;
- ``disconnect``: if the queue stays full for ``evict_after`` seconds, the subscription is
  evicted: :attr:`evicted` is set, ``on_evicted`` is called at once (the generation detaches
  it), and the consumer's next :meth:`get_batch` returns ``[]``, upon which its transport sends
  ``error`` (slow_consumer, retryable) and ``stream.end``.

Memory held for a consumer that never reads is bounded by ``maxsize`` events plus, under
``coalesce``, one pending delta (whose text grows with what the provider produces, bounded by
the stream's max_tokens).

Why not ``asyncio.Queue``: with exactly one producer and one consumer, a list and one waiter
future per side do the same job, and a token's hand-off (an append and, if the consumer sleeps,
one ``set_result``) is the hottest line of the server. Closing wakes a blocked producer, which
then drops its event: nobody will read it.

A consumer may also set :attr:`Subscription.deliver`: while it waits in :meth:`get_batch` with
nothing queued, :meth:`offer` hands it the event in the producer's own step instead of waking
it (the consumer writes at once if that needs no wait), which saves a task switch per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tokenwire.protocol.events import (
    DELTA_TYPES,
    AnyDelta,
    Event,
    StreamEnd,
    join_run,
    same_run,
)
from tokenwire.settings import OverflowPolicy


class Subscription:
    """A bounded, policy-governed queue of events between one stream and one consumer."""

    __slots__ = (
        "stream_id",
        "maxsize",
        "overflow",
        "evict_after",
        "closed",
        "evicted",
        "coalesced",
        "_events",
        "_pending",
        "_getter",
        "_putter",
        "_filled",
        "_on_evicted",
        "deliver",
    )

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
        self.maxsize = maxsize
        self.overflow = overflow
        self.evict_after = evict_after
        self.closed = False
        self.evicted = False
        self.coalesced = 0  # deltas merged into another (for metrics)
        self._events: list[Event] = []  # taken whole by the consumer: a list suffices
        self._pending: AnyDelta | None = None  # coalesce: the merged overflow delta
        self._getter: asyncio.Future[None] | None = None  # the consumer waits for events
        self._putter: asyncio.Future[None] | None = None  # the producer waits for room
        self._filled: asyncio.Future[None] | None = None  # the consumer waits for a full queue
        self._on_evicted = on_evicted
        # Set by the consumer: deliver(event) -> whether it took the event. Called from offer()
        # (in the producer's task) only while the consumer waits in get_batch() with an empty
        # queue; it must not raise.
        self.deliver: Callable[[Event], bool] | None = None

    @property
    def depth(self) -> int:
        """Events waiting for the consumer (including a pending coalesced delta)."""
        return len(self._events) + (self._pending is not None)

    def offer(self, event: Event) -> bool:
        """Queue ``event`` if that needs no wait; ``False`` means: await :meth:`put` instead.

        After the subscription was closed or evicted the event is dropped (``True``)."""
        if self.closed or self.evicted:
            return True
        if self._pending is not None or len(self._events) >= self.maxsize:
            return False
        getter = self._getter
        if getter is not None and not getter.done():  # the consumer waits, so nothing is queued
            deliver = self.deliver
            if deliver is not None and deliver(event):
                return True
            self._events.append(event)
            getter.set_result(None)
        else:
            self._events.append(event)
        filled = self._filled
        if filled is not None and len(self._events) >= self.maxsize and not filled.done():
            filled.set_result(None)
        return True

    async def put(self, event: Event) -> None:
        """Hand ``event`` to the consumer under the overflow policy.

        Returns at once after the subscription was closed or evicted, and when it is closed
        while waiting (the event is dropped: nobody will read it). Cancelling a waiting ``put``
        is safe: the event was not queued.
        """
        if self.offer(event):
            return
        if (
            self.overflow is OverflowPolicy.COALESCE
            and isinstance(event, DELTA_TYPES)
            and (self._pending is None or same_run(self._pending, event))
        ):
            self._coalesce(event)
            return
        if self.overflow is OverflowPolicy.DISCONNECT:
            try:
                async with asyncio.timeout(self.evict_after):
                    await self._wait_for_room()
            except TimeoutError:
                self._evict()
                return
        else:
            await self._wait_for_room()
        self.offer(event)

    def _coalesce(self, event: AnyDelta) -> None:
        pending = self._pending
        if pending is None:
            self._pending = event
            return
        self._pending = join_run([pending, event])
        self.coalesced += 1

    async def _wait_for_room(self) -> None:
        """Wait until the queue has room and no pending delta (or the subscription closed)."""
        while not (self.closed or self.evicted):
            if self._pending is None and len(self._events) < self.maxsize:
                return
            self._putter = asyncio.get_running_loop().create_future()
            try:
                await self._putter
            finally:
                self._putter = None

    def _evict(self) -> None:
        self.evicted = True
        if self._on_evicted is not None:  # at once, not when the blocked writer wakes
            self._on_evicted(self)

    def _room_made(self) -> None:
        if self._pending is not None and len(self._events) < self.maxsize:
            self._events.append(self._pending)  # the merged delta keeps its place in order
            self._pending = None
        putter = self._putter
        if putter is not None and not putter.done():
            putter.set_result(None)

    async def get_batch(self) -> list[Event]:
        """Wait for at least one event, then take every event queued.

        Returns ``[]`` after :meth:`nudge` (nothing to send: a heartbeat is due) and, at once,
        after eviction (the queue only fills while the consumer is not waiting here, so no
        wake-up is needed); :attr:`evicted` tells the two apart. Cancelling it is safe: no
        event is lost.
        """
        if self.evicted:
            return []
        events = self._events
        if not events:
            self._room_made()  # a pending delta may wait for the room there is now
            if not events:
                self._getter = asyncio.get_running_loop().create_future()
                try:
                    await self._getter
                finally:
                    self._getter = None
                if not events:  # nudged, or evicted
                    return []
        return self._take_all()

    async def wait_full(self, within: float) -> None:
        """Wait up to ``within`` seconds, or less if the queue fills up (or the subscription is
        closed): how a consumer gathers a burst into one write without stalling its producer.
        Cancelling it is safe."""
        if self.closed or self.evicted or len(self._events) >= self.maxsize:
            return
        loop = asyncio.get_running_loop()
        self._filled = filled = loop.create_future()
        timer = loop.call_later(within, _resolve, filled)
        try:
            await filled
        finally:
            timer.cancel()
            self._filled = None

    def take(self) -> list[Event]:
        """Take every event queued now, without waiting (``[]`` if none, or if evicted)."""
        if self.evicted or not self._events:
            return []
        return self._take_all()

    def _take_all(self) -> list[Event]:
        batch, self._events = self._events, []
        self._room_made()
        return batch

    def nudge(self) -> None:
        """Wake a consumer waiting in :meth:`get_batch` with nothing to deliver (it returns
        ``[]``): how a delivery loop learns that a heartbeat is due without a timer per wait."""
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def close(self) -> None:
        """Stop accepting events (the consumer is gone); a blocked producer returns. Idempotent."""
        self.closed = True
        for waiter in (self._putter, self._filled):
            if waiter is not None:
                _resolve(waiter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def ends_stream(batch: list[Event]) -> bool:
    """Whether ``batch`` holds the stream's final event (always its last)."""
    return isinstance(batch[-1], StreamEnd) if batch else False
