"""The subscription's hand-off and waits: one producer, one consumer, a bounded queue."""

from __future__ import annotations

import asyncio
import time

from tests.helpers import delta
from tokenwire.protocol.events import ReasoningDelta, ToolCallDelta
from tokenwire.settings import OverflowPolicy
from tokenwire.streams.subscription import Subscription

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


# -- coalescing by kind -----------------------------------------------------------------------


def reasoning(seq: int, text: str) -> ReasoningDelta:
    return ReasoningDelta(stream_id="s", seq=seq, delta=text)


def arguments(seq: int, index: int, text: str) -> ToolCallDelta:
    return ToolCallDelta(stream_id="s", seq=seq, index=index, delta=text)


async def test_coalescing_merges_only_adjacent_deltas_of_one_kind_and_call():
    subscription = Subscription("s", maxsize=1, overflow=OverflowPolicy.COALESCE)
    subscription.offer(delta(1, "q"))  # full from here on
    await subscription.put(reasoning(2, "th"))
    await subscription.put(reasoning(3, "ink"))  # joins the pending reasoning
    text = asyncio.create_task(subscription.put(delta(4, "a")))  # another kind: waits
    await asyncio.sleep(0.01)
    assert not text.done()
    assert await subscription.get_batch() == [delta(1, "q")]
    assert await subscription.get_batch() == [reasoning(3, "think")]
    await asyncio.wait_for(text, 1)
    await subscription.put(arguments(5, 0, '{"a"'))  # pending
    other_call = asyncio.create_task(subscription.put(arguments(6, 1, '{"b"')))
    await asyncio.sleep(0.01)
    assert not other_call.done()  # another call's arguments never join call 0's
    assert await subscription.get_batch() == [delta(4, "a")]
    assert await subscription.get_batch() == [arguments(5, 0, '{"a"')]
    await asyncio.wait_for(other_call, 1)
    await subscription.put(arguments(7, 1, ":"))
    await subscription.put(arguments(8, 1, "2}"))  # the same call: joins
    assert await subscription.get_batch() == [arguments(6, 1, '{"b"')]
    assert await subscription.get_batch() == [arguments(8, 1, ":2}")]
    assert subscription.coalesced == 2
