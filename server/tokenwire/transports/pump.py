"""The one delivery loop that every transport runs: :class:`Pump` and :func:`pump`.

It sends an attachment's catch-up, then drains its
:class:`~tokenwire.streams.subscription.Subscription` in batches (whatever is queued goes out
in one write), sends a heartbeat whenever the stream has been idle for ``heartbeat_interval``
seconds (also before the first token), bounds every write by ``send_timeout`` seconds, and
returns after ``stream.end``. What to write and when is decided by a
:class:`~tokenwire.transports.delivery.DeliveryState`; this module only waits and writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from enum import StrEnum
from typing import Any, Literal

from starlette.types import Receive

from tokenwire.protocol.events import Event
from tokenwire.streams.observe import NO_DELIVERY, DeliveryObserver
from tokenwire.streams.registry import Attachment
from tokenwire.streams.subscription import ends_stream
from tokenwire.transports.base import SendTimeout, Transport
from tokenwire.transports.delivery import DeliveryState, Tick, merge_deltas


class Delivery(StrEnum):
    """How :meth:`Pump.run` ended."""

    ENDED = "ended"  # stream.end was written
    EVICTED = "evicted"  # the consumer was too slow (overflow=disconnect); it was told so
    STOPPED = "stopped"  # Pump.stop() was called (the client left, or the server drains)


class Pump:
    """The delivery loop of one attachment through one transport (see the module docstring).

    Its timers (the send timeout and the heartbeat) are one timer that ticks every
    ``state.tick_interval`` seconds and only compares two timestamps, so that a write costs one
    clock read rather than a timer of its own.

    The pump's task is cancelled by nobody but the pump itself (a write that timed out, or
    :meth:`stop`) and whoever owns the task, so the two kinds of cancellation never mix.

    Writing at once: while the pump waits for events, a text delta that the write window lets
    through is written by the producer, in its own task, when its subscription offers it
    (:meth:`_write_at_once`, the subscription's ``deliver``), instead of waking the pump for
    it: at one token per wake-up, the common pace of a model, that halves the task switches
    per token (measured: ``benchmarks/hot_path.py``). The producer only starts the write. If
    the write completes without waiting (the usual case: the transport buffers it), that is
    all; if it has to wait (flow control, a client that reads slowly), the write is handed to
    the pump, which finishes it under the send timeout, so a producer never waits for a client
    here. A failed write is handed to the pump too, which raises it as its own.
    """

    __slots__ = (
        "attachment",
        "transport",
        "state",
        "task",
        "loop",
        "running",
        "_cancel_reason",
        "_timer",
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
        self.task: asyncio.Task[Any] | None = None  # the one in run()
        self.loop = asyncio.get_running_loop()
        self.state = DeliveryState(
            heartbeat_interval=heartbeat_interval,
            send_timeout=send_timeout,
            write_delay=write_delay,
            now=self.loop.time(),
        )
        self.running = False
        self._cancel_reason: Literal["timeout", "stop"] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._observer: DeliveryObserver = NO_DELIVERY  # the edge's, once live
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
        if self.state.tick_interval is not None:
            self._timer = self.loop.call_later(self.state.tick_interval, self._check)
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
            raise SendTimeout(f"a write took longer than {self.state.send_timeout} s") from None
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
        tick = self.state.tick(self.loop.time())
        if tick is Tick.TIMED_OUT:
            self._cancel("timeout")
            return
        if tick is Tick.HEARTBEAT and self.attachment.subscription is not None:
            self.attachment.subscription.nudge()
        assert self.state.tick_interval is not None  # a timer only runs with an interval
        self._timer = self.loop.call_later(self.state.tick_interval, self._check)

    async def _write(self, events: list[Event] | None) -> None:
        """Send ``events`` (``None``: a heartbeat) under the send timeout."""
        state = self.state
        state.begin_write(self.loop.time())
        try:
            if events is None:
                await self.transport.send_heartbeat()
            elif len(events) == 1:
                await self.transport.send_event(events[0])
            else:
                await self.transport.send_events(events)
        finally:
            state.end_write()

    async def _deliver(self) -> Delivery:
        attachment, state = self.attachment, self.state
        for batch in state.catch_up_batches(attachment.catch_up):
            await self._write(batch)
            state.written(batch)
            if ends_stream(batch):
                return Delivery.ENDED
        subscription = attachment.subscription
        if subscription is None:
            return Delivery.ENDED
        self._observer = observer = _observer_of(attachment)
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
                await self._write(state.eviction(attachment.stream_id, attachment.usage_so_far()))
                observer.evicted()
                return Delivery.EVICTED
            room = len(batch) < subscription.maxsize
            hold = state.hold(batch, self.loop.time(), room=room)
            if hold:  # mid-burst: gather more
                await subscription.wait_full(hold)
                batch += subscription.take()
                state.text_written_at(self.loop.time())
            if len(batch) > 1 and self.transport.merges_deltas:
                batch = merge_deltas(batch)
            await self._write(batch)
            self._written(batch)
            if ends_stream(batch):
                return Delivery.ENDED

    def _written(self, batch: list[Event]) -> None:
        self.state.written(batch)
        subscription = self.attachment.subscription
        self._observer.sent(batch, 0 if subscription is None else subscription.coalesced)

    def _write_at_once(self, event: Event) -> bool:
        """The subscription's ``deliver``: called in the producer's task while the pump waits
        for events. Takes ``event`` (returns ``True``) if the state lets it go out at once
        (:meth:`DeliveryState.may_write_at_once`) and nothing else is in hand; starts its
        write and, unless that completes without waiting, hands the rest (or the error) to the
        pump. Never raises, never waits."""
        if (
            self._handoff is not None
            or self._cancel_reason is not None
            or not self.state.may_write_at_once(event, self.loop.time())
        ):
            return False
        write = self.transport.send_event(event)
        try:
            waiting_for = write.send(None)
        except StopIteration:
            self.state.cursor = event.seq  # state.written((event,)), for the one delta
            self._observer.sent_delta(event)
            return True
        except Exception as exc:  # the client is gone (or a transport bug): the pump raises it
            self._handoff = exc
        else:
            self._handoff = _StartedWrite(write, waiting_for, [event])
        subscription = self.attachment.subscription
        if subscription is not None:
            subscription.nudge()
        return True

    async def _take_over(self) -> None:
        """Finish the write that the producer began (under the send timeout), or raise its
        error."""
        handoff, self._handoff = self._handoff, None
        if isinstance(handoff, Exception):
            raise handoff
        assert handoff is not None  # the caller checked
        self.state.writing = True
        try:
            await handoff
        finally:
            self.state.end_write()
        self._written(handoff.batch)


class _StartedWrite:
    """A write coroutine begun in another task and suspended on ``waiting_for`` (what it
    yielded to that task's event loop): awaiting this finishes it in the awaiting task, as
    ``await`` would have (each value the loop sends, or error it throws, goes to the write)."""

    __slots__ = ("write", "waiting_for", "batch")

    def __init__(
        self, write: Coroutine[Any, Any, None], waiting_for: Any, batch: list[Event]
    ) -> None:
        self.write = write
        self.waiting_for = waiting_for  # whatever the coroutine yielded: a future, or None
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


def _observer_of(attachment: Attachment) -> DeliveryObserver:
    """The observer of an attachment's live delivery: its generation's, when the stream runs
    in this process (a stream read from another worker's log is counted by that worker)."""
    generation = attachment.generation
    if generation is None or attachment.subscription is None:
        return NO_DELIVERY
    return generation.observer.delivery(
        generation.transport, generation.started_at, resumed=bool(attachment.catch_up)
    )


async def stop_on_disconnect(receive: Receive, delivery: Pump) -> None:
    """Stop ``delivery`` when the HTTP client disconnects (ASGI ``http.disconnect``, which
    only ``receive`` reports). Run it in a task of its own beside the pump, and cancel it when
    the pump returns."""
    while (await receive())["type"] != "http.disconnect":
        pass
    delivery.stop()


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
