"""The decisions of a delivery loop, with no I/O: what goes out in which write, and when.

:class:`DeliveryState` is fed events and clock readings (loop-time seconds) and answers; the
pump (:mod:`tokenwire.transports.pump`) does the waiting and the writing for both transports,
and tests feed this object directly. Its rules:

- **Catch-up** goes out in writes of at most :data:`CATCH_UP_BATCH` events, each under the
  send timeout.
- **Merging**: what is queued when the loop wakes goes out in one write, and each run of
  adjacent deltas of one kind in it (text, reasoning, or the arguments of one tool call) as
  one delta (texts joined, the last one's seq; seqs may skip, wire protocol v1, and a resume
  after it loses nothing). Nothing reorders.
- **Write window** (``write_delay`` seconds, the role of vLLM's ``--stream-interval`` and
  Centrifugo's ``write_delay``): a delta (of any kind) less than ``write_delay`` after the previous
  write of text waits until that much time has passed or the queue is full, and goes out with
  whatever came meanwhile. A delta after a pause, and every other event, goes out at once.
- **Cursor**: the seq of the last event written; an evicted consumer is told ``error``
  (slow_consumer, retryable) and ``stream.end`` at that cursor, so resuming after either loses
  nothing.
- **Timers**: one tick every half of the shorter of ``heartbeat_interval`` and
  ``send_timeout``; at a tick, a write pending for ``send_timeout`` seconds has timed out, and
  a loop idle (no write begun) for ``heartbeat_interval`` seconds owes a heartbeat. So a
  timeout is noticed after 1 to 1.5 x ``send_timeout``, and heartbeats come every 1 to 1.5
  intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import TypeGuard

from tokenwire.errors import ErrorCode
from tokenwire.protocol.events import (
    DELTA_TYPES,
    AnyDelta,
    ErrorEvent,
    Event,
    FinishReason,
    StreamEnd,
    Usage,
    join_run,
    same_run,
)

CATCH_UP_BATCH = 256
"""Catch-up events per write: a long replay goes out in bounded writes, each under the send
timeout."""


class Tick(StrEnum):
    """What a timer tick found (see :meth:`DeliveryState.tick`)."""

    IDLE = "idle"  # nothing due
    HEARTBEAT = "heartbeat"  # no write for heartbeat_interval: nudge the loop to send one
    TIMED_OUT = "timed_out"  # a write is pending for send_timeout: the client is not reading


class DeliveryState:
    """One delivery loop's clock and cursor (see the module docstring). Times are the event
    loop's clock (:meth:`asyncio.AbstractEventLoop.time`), in seconds."""

    __slots__ = (
        "heartbeat_interval",
        "send_timeout",
        "write_delay",
        "tick_interval",
        "cursor",
        "last_write",
        "last_delta_write",
        "writing",
    )

    def __init__(
        self,
        *,
        heartbeat_interval: float | None = None,
        send_timeout: float | None = None,
        write_delay: float = 0.0,
        now: float = 0.0,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.write_delay = write_delay
        intervals = [t for t in (heartbeat_interval, send_timeout) if t is not None]
        self.tick_interval: float | None = min(intervals) / 2 if intervals else None
        self.cursor = 0  # the seq of the last event written
        self.last_write = now  # when the last write began
        self.last_delta_write = -math.inf  # when the last write that carried text began
        self.writing = False

    # -- writes ---------------------------------------------------------------------------

    def begin_write(self, now: float) -> None:
        self.last_write = now
        self.writing = True

    def end_write(self) -> None:
        self.writing = False

    def written(self, batch: Sequence[Event]) -> None:
        """``batch`` reached the client: the cursor moves to its last seq."""
        seq = getattr(batch[-1], "seq", None)
        if seq:
            self.cursor = seq

    def catch_up_batches(self, catch_up: list[Event]) -> Iterator[list[Event]]:
        for start in range(0, len(catch_up), CATCH_UP_BATCH):
            yield catch_up[start : start + CATCH_UP_BATCH]

    def hold(self, batch: Sequence[Event], now: float, *, room: bool) -> float:
        """Seconds to wait for more events before writing ``batch`` (0: write now), by the
        write window; ``room``: the queue is not full (a full queue never waits). When the
        batch carries text, its write counts as the last text write from ``now`` on."""
        if not self.write_delay or not isinstance(batch[-1], DELTA_TYPES):
            return 0.0
        hold = self.last_delta_write + self.write_delay - now
        self.last_delta_write = now
        return hold if hold > 0 and room else 0.0

    def text_written_at(self, now: float) -> None:
        """The held batch's write began at ``now`` (after :meth:`hold` waited)."""
        self.last_delta_write = now

    def may_write_at_once(self, event: Event, now: float) -> TypeGuard[AnyDelta]:
        """Whether ``event``, offered while the loop waits, may be written at once, outside
        the loop: a text delta outside the write window, with no write under way. When it
        may, its write is counted as begun at ``now``."""
        if self.writing or not isinstance(event, DELTA_TYPES):
            return False
        if now < self.last_delta_write + self.write_delay:
            return False  # inside the write window: the loop gathers what comes
        self.last_write = self.last_delta_write = now
        return True

    # -- timers ---------------------------------------------------------------------------

    def tick(self, now: float) -> Tick:
        if self.writing:
            if self.send_timeout is not None and now - self.last_write >= self.send_timeout:
                return Tick.TIMED_OUT
        elif (
            self.heartbeat_interval is not None and now - self.last_write >= self.heartbeat_interval
        ):
            return Tick.HEARTBEAT
        return Tick.IDLE

    # -- the end --------------------------------------------------------------------------

    def eviction(self, stream_id: str, usage: Usage | None) -> list[Event]:
        """What an evicted consumer is told, at the cursor: see :func:`eviction_events`."""
        return eviction_events(stream_id, self.cursor, usage)


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


def merge_deltas(batch: list[Event]) -> list[Event]:
    """``batch`` with each run of adjacent deltas of one kind (:func:`same_run`: text,
    reasoning, or one tool call's arguments) merged into one: the texts joined, the last seq.
    Other events keep their place; nothing reorders."""
    merged: list[Event] = []
    run: list[AnyDelta] = []
    for event in batch:
        if isinstance(event, DELTA_TYPES):
            if run and not same_run(run[-1], event):
                merged.append(join_run(run))
                run = []
            run.append(event)
            continue
        if run:
            merged.append(join_run(run))
            run = []
        merged.append(event)
    if run:
        merged.append(join_run(run))
    return merged
