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
import math
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Generator
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol

from starlette.types import Scope, Send

from tokenwire.errors import ErrorCode
from tokenwire.metrics import DeliveryObserver, delivery_observer
from tokenwire.protocol.events import ErrorEvent, Event, FinishReason, StreamEnd, TextDelta, Usage
from tokenwire.streams.registry import Attachment
from tokenwire.streams.subscription import ends_stream

SERVER_SEND = "tokenwire.server_send"
"""The scope key under which tokenwire's app keeps the ASGI server's own ``send`` (see
:func:`server_send`)."""


def server_send(scope: Scope, send: Send) -> Send:
    """Where a stream's frames go: the ASGI server's own ``send``, kept in the scope by
    tokenwire's app before any middleware wraps it, else ``send``.

    Starlette wraps ``send`` three times on the way to a route (its error and exception
    middleware and the route itself), and each wrapper only watches for
    ``http.response.start``, to know that a response has begun; so do tokenwire's own
    (``X-Request-Id``, CORS). A response's start still goes through them; its body frames, a
    coroutine frame per wrapper under every token, need not.
    Middleware wrapped around tokenwire's app from outside still sees every frame: what the
    app keeps is the ``send`` it was given.
    """
    return scope.get(SERVER_SEND, send)


class Transport(ABC):
    """Writes events of one or more streams to one client connection."""

    name: ClassVar[str]

    @abstractmethod
    async def send_events(self, events: list[Event]) -> None:
        """Write ``events`` (one stream's, in order) as one write where the framing allows.

        Raises ``OSError`` (or the server's subclass of it) if the client is gone.
        """

    def send_event(self, event: Event) -> Coroutine[Any, Any, None]:
        """Write one event, as ``send_events([event])`` does: returns the write's coroutine.

        A plain method, not a coroutine function, so that a transport can hand back its
        server's own ``send`` coroutine (ASGI servers' ``send`` is a coroutine function) with
        no frame of its own in between: nearly every write of a stream is one event.
        """
        return self.send_events([event])

    @abstractmethod
    async def send_heartbeat(self) -> None:
        """Keep an idle connection open (SSE: a ``: ping`` comment)."""


class Gauge(Protocol):
    """What counts a transport's open connections (a Prometheus gauge's labelled child)."""

    def inc(self) -> None: ...

    def dec(self) -> None: ...


class SendTimeout(TimeoutError):
    """A write did not complete within the send timeout: the client is not reading.

    A ``TimeoutError``, and so an ``OSError``: transports treat it as a lost client."""


class Delivery(StrEnum):
    """How :func:`pump` ended."""

    ENDED = "ended"  # stream.end was written
    EVICTED = "evicted"  # the consumer was too slow (overflow=disconnect); it was told so
    STOPPED = "stopped"  # Pump.stop() was called (the client left, or the server drains)


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


class Pump:
    """The delivery loop of one attachment through one transport (see the module docstring).

    Its timers (the send timeout and the
    heartbeat) are one timer that ticks every half of the shorter interval and only looks at
    two timestamps, so that a write costs one clock read rather than a timer of its own. A
    write still pending ``send_timeout`` seconds after it began is abandoned at the next tick
    (so after 1 to 1.5 x ``send_timeout`` seconds); a loop idle for ``heartbeat_interval``
    seconds is nudged (its subscription's ``get_batch`` returns ``[]``) at the next tick, so
    heartbeats come every 1 to 1.5 intervals.

    Whatever is queued when the loop wakes goes out in one write, and consecutive text deltas
    in it as one ``text.delta`` (their texts joined, the last one's seq): a consumer that falls
    behind catches up in a few large frames instead of many small ones. ``write_delay``
    (seconds) spaces the writes of text: a delta that comes less than ``write_delay`` after
    the previous write of text waits until that much time has passed (or the subscription's
    queue is full), and goes out with whatever came meanwhile (the role of vLLM's
    ``--stream-interval`` and Centrifugo's ``write_delay``). A text delta after a pause (the
    first one of a stream, or any after a gap longer than ``write_delay``) goes out at once;
    so do all other events. A full queue ends the wait, so the window never slows a stream
    whose provider runs ahead: it only makes its writes fewer and larger.

    The pump's task is cancelled by nobody but the pump itself (a write that timed out, or
    :meth:`stop`) and whoever owns the task, so the two kinds of cancellation never mix.

    Writing at once: while the pump waits for events, a text delta that the write window lets
    through is written by the producer, in its own task, when its subscription offers it
    (:meth:`_write_at_once`, the subscription's ``deliver``), instead of waking the pump for
    it: at one token per wake-up, the common pace of a model, that halves the task switches
    per token. The producer only starts the write. If the write completes without waiting (the
    usual case: the transport buffers it), that is all; if it has to wait (flow control, a
    client that reads slowly), the write is handed to the pump, which finishes it under the
    send timeout, so a producer never waits for a client here. A failed write is handed to the
    pump too, which raises it as its own.
    """

    __slots__ = (
        "attachment",
        "transport",
        "heartbeat_interval",
        "send_timeout",
        "write_delay",
        "last_delta_write",
        "task",
        "loop",
        "last_write",
        "writing",
        "running",
        "_cancel_reason",
        "_tick",
        "_timer",
        "_cursor",
        "_observer",
        "_handoff",
    )

    def __init__(
        self,
        attachment: Attachment,
        transport: Transport,
        *,
        heartbeat_interval: float | None = None,
        send_timeout: float | None = None,
        write_delay: float = 0.0,
    ) -> None:
        self.attachment = attachment
        self.transport = transport
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.write_delay = write_delay
        self.last_delta_write = -math.inf  # loop time of the last write that carried text
        self.task: asyncio.Task[Any] | None = None  # the one in run()
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()  # when the last write began
        self.writing = False
        self.running = False
        self._cancel_reason: Literal["timeout", "stop"] | None = None
        intervals = [t for t in (heartbeat_interval, send_timeout) if t is not None]
        self._tick = min(intervals) / 2 if intervals else None
        self._timer: asyncio.TimerHandle | None = None
        self._cursor = 0  # the seq of the last event written
        self._observer: DeliveryObserver | None = None  # metrics hook, set once live
        # a write the producer began: its error, or the rest of it to finish
        self._handoff: Exception | _StartedWrite | None = None

    async def run(self) -> Delivery:
        """Deliver until ``stream.end`` is written (:attr:`Delivery.ENDED`), the consumer is
        evicted (:attr:`Delivery.EVICTED`) or :meth:`stop` is called (:attr:`Delivery.STOPPED`).

        Raises :class:`SendTimeout` (an ``OSError``) when a write takes longer than
        ``send_timeout`` seconds, and the transport's ``OSError`` when the client is gone.
        Cancelling it is safe: no queued event is lost from the subscription (the caller
        decides what a cancel means for the generation).
        """
        self.task = asyncio.current_task()
        if self._tick is not None:
            self._timer = self.loop.call_later(self._tick, self._check)
        self.running = True
        try:
            return await self._deliver()
        except asyncio.CancelledError:
            reason = self._cancel_reason
            if reason is None or self.task is None:
                raise
            self.task.uncancel()
            if reason == "stop":
                return Delivery.STOPPED
            raise SendTimeout(f"a write took longer than {self.send_timeout} s") from None
        finally:
            self.running = False
            if self.attachment.subscription is not None:
                self.attachment.subscription.deliver = None
            if isinstance(self._handoff, _StartedWrite):
                self._handoff.write.close()  # abandoned, like any pending write
            self._handoff = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def stop(self) -> None:
        """End :meth:`run` as soon as possible, with :attr:`Delivery.STOPPED` (a pending
        write is abandoned). Safe to call from any callback, any number of times."""
        self._cancel("stop")

    def _cancel(self, reason: Literal["timeout", "stop"]) -> None:
        if self.running and self._cancel_reason is None and self.task is not None:
            self._cancel_reason = reason
            self.task.cancel()

    def _check(self) -> None:
        self._timer = None
        if not self.running or self._cancel_reason is not None:
            return
        now = self.loop.time()
        if self.writing:
            if self.send_timeout is not None and now - self.last_write >= self.send_timeout:
                self._cancel("timeout")
                return
        elif self.heartbeat_interval is not None and self.attachment.subscription is not None:
            if now - self.last_write >= self.heartbeat_interval:
                self.attachment.subscription.nudge()
        assert self._tick is not None
        self._timer = self.loop.call_later(self._tick, self._check)

    async def _write(self, events: list[Event] | None) -> None:
        """Send ``events`` (``None``: a heartbeat) under the send timeout."""
        self.last_write = self.loop.time()
        self.writing = True
        try:
            if events is None:
                await self.transport.send_heartbeat()
            elif len(events) == 1:
                await self.transport.send_event(events[0])
            else:
                await self.transport.send_events(events)
        finally:
            self.writing = False

    async def _deliver(self) -> Delivery:
        attachment = self.attachment
        catch_up = attachment.catch_up
        for start in range(0, len(catch_up), CATCH_UP_BATCH):
            batch = catch_up[start : start + CATCH_UP_BATCH]
            await self._write(batch)
            self._cursor = _last_seq(batch, self._cursor)
            if ends_stream(batch):
                return Delivery.ENDED
        subscription = attachment.subscription
        if subscription is None:
            return Delivery.ENDED
        self._observer = observer = delivery_observer(attachment)  # metrics hook
        subscription.deliver = self._write_at_once
        while True:
            batch = await subscription.get_batch()
            if self._handoff is not None:  # a write the producer began comes first
                await self._take_over()
                if not batch:
                    continue
            if not batch:
                if not subscription.evicted:  # nudged: idle for a heartbeat interval
                    await self._write(None)
                    continue
                ending = eviction_events(
                    attachment.stream_id, self._cursor, attachment.usage_so_far()
                )
                await self._write(ending)
                observer.evicted()  # metrics hook
                return Delivery.EVICTED
            if self.write_delay and isinstance(batch[-1], TextDelta):
                hold = self.last_delta_write + self.write_delay - self.loop.time()
                if hold > 0 and len(batch) < subscription.maxsize:  # mid-burst: gather more
                    await subscription.wait_full(hold)
                    batch += subscription.take()
                self.last_delta_write = self.loop.time()
            if len(batch) > 1:
                batch = merge_deltas(batch)
            await self._write(batch)
            self._written(batch)
            if ends_stream(batch):
                return Delivery.ENDED

    def _written(self, batch: list[Event]) -> None:
        self._cursor = _last_seq(batch, self._cursor)
        self._observer.sent(batch)  # type: ignore[union-attr]  # metrics hook

    def _write_at_once(self, event: Event) -> bool:
        """The subscription's ``deliver``: called in the producer's task while the pump waits
        for events. Takes ``event`` (returns ``True``) if it is a text delta outside the write
        window and no write is under way; starts its write and, unless that completes without
        waiting, hands the rest (or the error) to the pump. Never raises, never waits."""
        if (
            event.__class__ is not TextDelta
            or self.writing
            or self._handoff is not None
            or self._cancel_reason is not None
        ):
            return False
        now = self.loop.time()
        if now < self.last_delta_write + self.write_delay:
            return False  # inside the write window: the pump gathers what comes
        self.last_write = self.last_delta_write = now
        write = self.transport.send_event(event)
        try:
            waiting_for = write.send(None)
        except StopIteration:
            self._cursor = event.seq  # type: ignore[union-attr]  # a TextDelta
            self._observer.sent_text()  # type: ignore[union-attr]  # metrics hook
            return True
        except Exception as exc:  # the client is gone (or a transport bug): the pump raises it
            self._handoff = exc
        else:
            self._handoff = _StartedWrite(write, waiting_for, [event])
        self.attachment.subscription.nudge()  # type: ignore[union-attr]
        return True

    async def _take_over(self) -> None:
        """Finish the write that the producer began (under the send timeout), or raise its
        error."""
        handoff, self._handoff = self._handoff, None
        if isinstance(handoff, Exception):
            raise handoff
        assert handoff is not None
        self.writing = True
        try:
            await handoff
        finally:
            self.writing = False
        self._written(handoff.batch)


class _StartedWrite:
    """A write coroutine begun in another task and suspended on ``waiting_for`` (what it
    yielded to that task's event loop): awaiting this finishes it in the awaiting task, as
    ``await`` would have (each value the loop sends, or error it throws, goes to the write)."""

    __slots__ = ("write", "waiting_for", "batch")

    def __init__(self, write: Coroutine[Any, Any, None], waiting_for: Any, batch: list[Event]):
        self.write = write
        self.waiting_for = waiting_for
        self.batch = batch

    def __await__(self) -> Generator[Any, Any, None]:
        write, waiting_for = self.write, self.waiting_for
        while True:
            try:
                sent = yield waiting_for
            except BaseException as exc:  # a cancel, too: the write sees it where it waits
                try:
                    waiting_for = write.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_for = write.send(sent)
                except StopIteration:
                    return


async def pump(
    attachment: Attachment,
    transport: Transport,
    *,
    heartbeat_interval: float | None = None,
    send_timeout: float | None = None,
    write_delay: float = 0.0,
) -> Delivery:
    """Run a :class:`Pump` of ``attachment`` through ``transport`` in the current task."""
    delivery = Pump(
        attachment,
        transport,
        heartbeat_interval=heartbeat_interval,
        send_timeout=send_timeout,
        write_delay=write_delay,
    )
    return await delivery.run()


def merge_deltas(batch: list[Event]) -> list[Event]:
    """``batch`` with each run of consecutive text deltas merged into one: the texts joined,
    the last seq (seqs may skip, wire protocol v1; a resume after it loses nothing)."""
    merged: list[Event] = []
    run: list[TextDelta] = []
    for event in batch:
        if isinstance(event, TextDelta):
            run.append(event)
            continue
        if run:
            merged.append(_joined(run))
            run = []
        merged.append(event)
    if run:
        merged.append(_joined(run))
    return merged


def _joined(run: list[TextDelta]) -> TextDelta:
    if len(run) == 1:
        return run[0]
    last = run[-1]
    return TextDelta(
        stream_id=last.stream_id, seq=last.seq, delta="".join(event.delta for event in run)
    )


def _last_seq(batch: list[Event], cursor: int) -> int:
    return getattr(batch[-1], "seq", None) or cursor
