"""The delivery loop against transports that record, stall or fail: the write window, the write
begun in the producer's step, the send timeout, stop and cancel."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers import delta, end
from tokenwire.protocol.events import Event
from tokenwire.streams.registry import Attachment
from tokenwire.streams.subscription import Subscription
from tokenwire.transports.base import SendTimeout, Transport
from tokenwire.transports.pump import Delivery, Pump

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
