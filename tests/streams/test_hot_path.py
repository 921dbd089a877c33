"""The hot path's own rules, below the transports: the text delta's direct JSON encoding, the
subscription's hand-off and waits, the pump's write window and merging, the stream log's
window, and the drain signal."""

from __future__ import annotations

import asyncio
import gc
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from tokenwire.protocol import sse
from tokenwire.protocol import websocket as ws_codec
from tokenwire.protocol.events import (
    Event,
    FinishReason,
    StreamEnd,
    StreamStart,
    TextDelta,
    event_json,
    parse_event,
)
from tokenwire.streams.log import CursorExpired, MemoryStreamLog, StreamRecord
from tokenwire.streams.registry import Attachment, DrainSignal
from tokenwire.streams.subscription import Subscription
from tokenwire.transports.base import SendTimeout, Transport
from tokenwire.transports.delivery import merge_deltas
from tokenwire.transports.pump import Delivery, Pump


class _DeltaModel(BaseModel):
    """What TextDelta was before it became a dataclass: the reference serializer."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: str = "text.delta"
    stream_id: str
    seq: int
    delta: str


@settings(max_examples=300, deadline=None)
@given(
    stream_id=st.text(min_size=1, max_size=30),
    seq=st.integers(min_value=0, max_value=2**53),
    delta=st.text(max_size=60),
)
def test_text_delta_json_is_the_serializer_s_byte_for_byte(stream_id, seq, delta):
    event = TextDelta(stream_id=stream_id, seq=seq, delta=delta)
    reference = _DeltaModel(stream_id=stream_id, seq=seq, delta=delta).model_dump_json()
    assert event_json(event) == reference
    assert ws_codec.encode_event(event) == reference
    assert (
        sse.encode_event(event) == f"id: {seq}\nevent: text.delta\ndata: {reference}\n\n".encode()
    )
    assert parse_event(reference) == event


def test_text_delta_parsing_still_validates():
    good = {"type": "text.delta", "stream_id": "s", "seq": 1, "delta": "x"}
    assert parse_event(json.dumps(good)) == TextDelta(stream_id="s", seq=1, delta="x")
    for bad in (
        {**good, "extra": 1},
        {**good, "seq": "one"},
        {k: good[k] for k in good if k != "delta"},
    ):
        with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
            parse_event(json.dumps(bad))


def delta(seq: int, text: str = "x") -> TextDelta:
    return TextDelta(stream_id="s", seq=seq, delta=text)


def end(seq: int) -> StreamEnd:
    return StreamEnd(stream_id="s", seq=seq, finish_reason=FinishReason.STOP, usage=None)


def test_merge_deltas_joins_each_run_and_keeps_the_last_seq():
    start = StreamStart(stream_id="s", seq=1, model="m", created=0)
    batch: list[Event] = [start, delta(2, "a"), delta(3, "b"), delta(4, "c"), end(5)]
    assert merge_deltas(batch) == [start, delta(4, "abc"), end(5)]
    assert merge_deltas([delta(7, "only")]) == [delta(7, "only")]


# -- subscription ---------------------------------------------------------------------------


async def test_offer_refuses_when_full_and_get_batch_takes_everything():
    subscription = Subscription("s", maxsize=2)
    assert subscription.offer(delta(1)) and subscription.offer(delta(2))
    assert not subscription.offer(delta(3))  # full: the producer must await put()
    assert await subscription.get_batch() == [delta(1), delta(2)]
    assert subscription.offer(delta(3))
    assert subscription.take() == [delta(3)] and subscription.take() == []


async def test_closing_releases_a_blocked_producer():
    subscription = Subscription("s", maxsize=1)
    subscription.offer(delta(1))
    put = asyncio.create_task(subscription.put(delta(2)))
    await asyncio.sleep(0.01)
    assert not put.done()  # block: waits for room
    subscription.close()
    await asyncio.wait_for(put, 1)  # returns, the event dropped: nobody will read it
    assert subscription.depth == 1


async def test_a_blocked_producer_resumes_when_the_consumer_takes():
    subscription = Subscription("s", maxsize=1)
    subscription.offer(delta(1))
    put = asyncio.create_task(subscription.put(delta(2)))
    await asyncio.sleep(0.01)
    assert await subscription.get_batch() == [delta(1)]
    await asyncio.wait_for(put, 1)
    assert await subscription.get_batch() == [delta(2)]


async def test_wait_full_returns_when_the_queue_fills_not_later():
    subscription = Subscription("s", maxsize=3)
    waiter = asyncio.create_task(subscription.wait_full(10))
    await asyncio.sleep(0.01)
    subscription.offer(delta(1))
    subscription.offer(delta(2))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    subscription.offer(delta(3))
    await asyncio.wait_for(waiter, 1)
    began = time.monotonic()
    await Subscription("t").wait_full(0.05)  # an empty queue: the whole window
    assert time.monotonic() - began >= 0.045


async def test_nudge_wakes_a_waiting_consumer_with_nothing():
    subscription = Subscription("s")
    batch = asyncio.create_task(subscription.get_batch())
    await asyncio.sleep(0.01)
    subscription.nudge()
    assert await asyncio.wait_for(batch, 1) == []


# -- the pump's write window -----------------------------------------------------------------


class Recorder(Transport):
    name = "recorder"

    def __init__(self) -> None:
        self.writes: list[tuple[float, list[Event]]] = []

    async def send_events(self, events: list[Event]) -> None:
        self.writes.append((time.monotonic(), list(events)))

    async def send_heartbeat(self) -> None:
        self.writes.append((time.monotonic(), []))


async def test_the_write_window_merges_a_burst_but_not_the_first_delta():
    window = 0.2
    subscription = Subscription("s", maxsize=64)
    recorder = Recorder()
    attachment = Attachment("s", [], subscription)
    pump = asyncio.create_task(Pump(attachment, recorder, write_delay=window).run())
    await asyncio.sleep(0.01)
    offered = time.monotonic()
    subscription.offer(delta(1, "a"))  # the first delta: at once
    await asyncio.sleep(0.01)
    for seq, text in ((2, "b"), (3, "c"), (4, "d")):  # a burst: held, merged
        subscription.offer(delta(seq, text))
        await asyncio.sleep(0.01)
    subscription.offer(end(5))
    assert await asyncio.wait_for(pump, 2) is Delivery.ENDED
    (first_at, first), (burst_at, burst) = recorder.writes[0], recorder.writes[1]
    assert first == [delta(1, "a")] and first_at - offered < window / 2
    assert burst == [delta(4, "bcd"), end(5)]  # one frame of text (the last seq), one write
    assert burst_at - first_at >= window * 0.9  # not before the window closed
    assert len(recorder.writes) == 2


async def test_a_full_queue_ends_the_write_window_early():
    subscription = Subscription("s", maxsize=4)
    recorder = Recorder()
    pump = asyncio.create_task(
        Pump(Attachment("s", [], subscription), recorder, write_delay=10).run()
    )
    await asyncio.sleep(0.01)
    subscription.offer(delta(1))
    await asyncio.sleep(0.01)
    began = time.monotonic()
    for seq in range(2, 6):  # fills the queue of 4 while the pump holds
        subscription.offer(delta(seq))
    await asyncio.sleep(0.05)
    assert [events for _, events in recorder.writes] == [[delta(1)], [delta(5, "xxxx")]]
    assert recorder.writes[1][0] - began < 1  # not the 10 s window
    subscription.offer(end(6))
    assert await asyncio.wait_for(pump, 2) is Delivery.ENDED


async def test_stop_ends_a_waiting_pump_and_says_so():
    subscription = Subscription("s")
    pump = Pump(Attachment("s", [], subscription), Recorder())
    run = asyncio.create_task(pump.run())
    await asyncio.sleep(0.01)
    pump.stop()
    pump.stop()  # idempotent: one cancel
    assert await asyncio.wait_for(run, 1) is Delivery.STOPPED


async def test_a_cancel_from_outside_is_not_taken_for_a_stop():
    pump_task = asyncio.create_task(Pump(Attachment("s", [], Subscription("s")), Recorder()).run())
    await asyncio.sleep(0.01)
    pump_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pump_task


# -- writing at once, in the producer's step --------------------------------------------------


class Gate(Transport):
    """A transport whose writes wait for ``opened`` (a client that reads slowly) when
    ``closed_gate``, and fail with ``OSError`` when ``gone``."""

    name = "gate"

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.closed_gate = False
        self.gone = False
        self.writes: list[list[Event]] = []
        self.abandoned = 0

    async def send_events(self, events: list[Event]) -> None:
        if self.gone:
            raise OSError("client gone")
        try:
            if self.closed_gate:
                await self.opened.wait()
        except GeneratorExit:
            self.abandoned += 1
            raise
        self.writes.append(list(events))

    async def send_heartbeat(self) -> None:
        pass


async def started_pump(transport: Transport, **options) -> tuple[Subscription, asyncio.Task]:
    subscription = Subscription("s", maxsize=8)
    task = asyncio.create_task(Pump(Attachment("s", [], subscription), transport, **options).run())
    await asyncio.sleep(0.01)  # the pump waits for events
    return subscription, task


async def test_a_waiting_pump_s_delta_is_written_in_the_producer_s_step():
    gate = Gate()
    subscription, pump = await started_pump(gate)
    assert subscription.offer(delta(1, "a"))
    assert gate.writes == [[delta(1, "a")]]  # before the pump's task ran again
    assert subscription.depth == 0
    subscription.offer(end(2))  # not a delta: the pump writes it
    assert gate.writes == [[delta(1, "a")]]
    assert await asyncio.wait_for(pump, 1) is Delivery.ENDED
    assert gate.writes == [[delta(1, "a")], [end(2)]]


async def test_a_write_that_must_wait_goes_to_the_pump_and_order_holds():
    gate = Gate()
    gate.closed_gate = True
    subscription, pump = await started_pump(gate)
    assert subscription.offer(delta(1, "a"))  # started, then handed over: the producer goes on
    for seq in (2, 3):
        assert subscription.offer(delta(seq, "b"))  # queued behind it
    await asyncio.sleep(0.02)
    assert gate.writes == []
    gate.opened.set()
    subscription.offer(end(4))
    assert await asyncio.wait_for(pump, 1) is Delivery.ENDED
    assert gate.writes[0] == [delta(1, "a")]  # first, as begun
    assert [e for write in gate.writes[1:] for e in write] == [delta(3, "bb"), end(4)]


async def test_a_write_handed_over_still_has_the_send_timeout():
    gate = Gate()
    gate.closed_gate = True
    subscription, pump = await started_pump(gate, send_timeout=0.1)
    subscription.offer(delta(1))
    with pytest.raises(SendTimeout):
        await asyncio.wait_for(pump, 2)
    assert gate.abandoned == 0  # cancelled where it waited, not left suspended
    assert subscription.deliver is None


async def test_a_failed_write_in_the_producer_s_step_is_raised_by_the_pump():
    gate = Gate()
    gate.gone = True
    subscription, pump = await started_pump(gate)
    assert subscription.offer(delta(1))  # the producer never sees the error
    with pytest.raises(OSError, match="client gone"):
        await asyncio.wait_for(pump, 1)


async def test_a_stopped_pump_abandons_the_write_it_was_handed():
    gate = Gate()
    gate.closed_gate = True
    subscription = Subscription("s")
    pump = Pump(Attachment("s", [], subscription), gate)
    run = asyncio.create_task(pump.run())
    await asyncio.sleep(0.01)
    subscription.offer(delta(1))
    pump.stop()  # before the pump took the write over
    assert await asyncio.wait_for(run, 1) is Delivery.STOPPED
    assert gate.abandoned == 1 and gate.writes == []


async def test_inside_the_write_window_the_pump_gathers_instead():
    gate = Gate()
    subscription, pump = await started_pump(gate, write_delay=0.2)
    subscription.offer(delta(1, "a"))
    subscription.offer(delta(2, "b"))  # within the window: queued for the pump
    subscription.offer(delta(3, "c"))
    assert gate.writes == [[delta(1, "a")]]
    subscription.offer(end(4))
    assert await asyncio.wait_for(pump, 2) is Delivery.ENDED
    assert gate.writes == [[delta(1, "a")], [delta(3, "bc"), end(4)]]


# -- stream log window ------------------------------------------------------------------------


def test_stream_record_keeps_a_window_and_slices_it_by_seq():
    record = StreamRecord("s")
    for seq in range(1, 11):
        record.add(delta(seq), max_events=4, max_bytes=1 << 20)
    assert [e.seq for e in record.events] == [7, 8, 9, 10]
    assert [e.seq for e in record.after("s", 8)] == [9, 10]
    assert [e.seq for e in record.after("s", 6)] == [7, 8, 9, 10]
    assert record.after("s", 10) == []
    with pytest.raises(CursorExpired):
        record.after("s", 5)
    with pytest.raises(ValueError, match="does not follow"):
        record.add(delta(12), max_events=4, max_bytes=1 << 20)


def test_stream_record_rebuilds_deltas_and_keeps_no_event_objects_alive():
    """A kept delta is its text: no object for the garbage collector to walk per token."""
    record = StreamRecord("s-gc")
    record.add(StreamStart(stream_id="s-gc", seq=1, model="m", created=0), 100, 1 << 20)
    for seq in range(2, 52):
        record.add(TextDelta(stream_id="s-gc", seq=seq, delta=f"t{seq} "), 100, 1 << 20)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, TextDelta) and o.stream_id == "s-gc"]
    assert alive == []
    events = record.after("s-gc", 40)
    assert events == [TextDelta(stream_id="s-gc", seq=n, delta=f"t{n} ") for n in range(41, 52)]
    assert isinstance(record.events[0], StreamStart)
    with pytest.raises(ValueError, match="s-other"):
        record.add(TextDelta(stream_id="s-other", seq=52, delta="x"), 100, 1 << 20)


def test_memory_log_bounds_by_bytes_too():
    log = MemoryStreamLog(max_events=1000, max_bytes=1024, ttl=60)
    log.begin("s")
    for seq in range(1, 201):
        log.append("s", delta(seq, "word "))
    snapshot = log.snapshot("s", 199)
    assert snapshot is not None and [e.seq for e in snapshot[0]] == [200]
    with pytest.raises(CursorExpired):
        log.snapshot("s", 1)


# -- drain signal --------------------------------------------------------------------------


async def test_drain_signal_calls_watchers_once_and_forgets_unwatched_ones():
    signal = DrainSignal()
    calls: list[str] = []
    signal.watch(lambda: calls.append("a"))
    unwatch = signal.watch(lambda: calls.append("b"))
    unwatch()
    signal.set()
    signal.set()
    assert calls == ["a"] and signal.is_set()
    signal.watch(lambda: calls.append("late"))  # after the drain began: soon, not never
    await asyncio.sleep(0)
    assert calls == ["a", "late"]
