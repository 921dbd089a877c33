"""Generation with no socket: a scripted provider in, the event list out (from a subscription
and from the stream log), for the endings a stream can have."""

from __future__ import annotations

import asyncio

from tokenwire.errors import ErrorCode
from tokenwire.protocol.events import ErrorEvent, Event, FinishReason, StreamEnd, StreamStart
from tokenwire.protocol.requests import ChatMessage, GenerateParams
from tokenwire.providers.scripted import Script, ScriptedProvider, scripted_text
from tokenwire.streams.generation import Generation, GenerationState
from tokenwire.streams.log import MemoryStreamLog
from tokenwire.streams.observe import StreamEnded, StreamObserver
from tokenwire.streams.subscription import Subscription

PARAMS = GenerateParams(messages=[ChatMessage(role="user", content="hi")])


def generation(script: Script, **options: object) -> tuple[Generation, MemoryStreamLog]:
    log = MemoryStreamLog(max_events=10_000, max_bytes=1 << 24, ttl=60)
    provider = ScriptedProvider(script)
    made = Generation(
        "str_test", provider, PARAMS, model="scripted", log=log, transport="test", **options
    )
    return made, log


async def drain(subscription: Subscription) -> list[Event]:
    events: list[Event] = []
    while not events or not isinstance(events[-1], StreamEnd):
        events += await asyncio.wait_for(subscription.get_batch(), 5)
    return events


def text_of(events: list[Event]) -> str:
    return "".join(getattr(event, "delta", "") for event in events)


async def test_a_stream_is_start_deltas_end_numbered_from_one():
    made, log = generation(Script(tokens=5))
    subscription = made.subscribe()
    made.start()
    events = await drain(subscription)
    assert isinstance(events[0], StreamStart) and events[0].model == "scripted"
    assert text_of(events) == scripted_text(5)
    assert [getattr(event, "seq", None) for event in events] == list(range(1, 8))
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason is FinishReason.STOP
    assert end.usage is not None and end.usage.completion_tokens == 5
    reader = await log.open_reader("str_test", 0)  # an ended stream is read from the log
    assert reader.catch_up == events
    assert made.state is GenerationState.ENDED


async def test_max_tokens_ends_with_length():
    made, _ = generation(Script(tokens=50))
    made.params = PARAMS.model_copy(update={"max_tokens": 3})
    subscription = made.subscribe()
    made.start()
    events = await drain(subscription)
    assert text_of(events) == scripted_text(3)
    assert isinstance(events[-1], StreamEnd)
    assert events[-1].finish_reason in (FinishReason.LENGTH, FinishReason.STOP)


async def test_a_provider_error_is_an_error_then_the_end():
    made, _ = generation(Script(tokens=10, error_after=4))
    subscription = made.subscribe()
    made.start()
    events = await drain(subscription)
    assert text_of(events) == scripted_text(4)
    error, end = events[-2:]
    assert isinstance(error, ErrorEvent) and error.code is ErrorCode.PROVIDER_ERROR
    assert isinstance(end, StreamEnd) and end.finish_reason is FinishReason.ERROR


async def test_cancel_ends_with_cancelled_and_the_usage_so_far():
    made, _ = generation(Script(tokens=1000, interval=0.01))
    subscription = made.subscribe()
    made.start()
    await asyncio.sleep(0.05)
    assert made.cancel()
    events = await drain(subscription)
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason is FinishReason.CANCELLED
    deltas = sum(1 for event in events if getattr(event, "delta", None) is not None)
    assert end.usage is not None and end.usage.completion_tokens == deltas < 1000
    assert not made.cancel()  # once


async def test_the_last_reader_leaving_cancels_under_the_cancel_policy():
    made, _ = generation(Script(tokens=1000, interval=0.01))
    subscription = made.subscribe()
    made.start()
    await asyncio.sleep(0.03)
    made.unsubscribe(subscription, "disconnected")
    await asyncio.wait_for(made.wait(), 5)
    assert made.finish_reason is FinishReason.CANCELLED


async def test_the_first_token_deadline_ends_a_silent_provider_with_an_error():
    made, _ = generation(Script(tokens=5, ttft=5.0), first_token_timeout=0.05)
    subscription = made.subscribe()
    made.start()
    events = await drain(subscription)
    error = events[-2]
    assert isinstance(error, ErrorEvent) and error.code is ErrorCode.PROVIDER_TIMEOUT
    assert events[-1].finish_reason is FinishReason.ERROR  # type: ignore[union-attr]  # a StreamEnd


async def test_the_observer_hears_how_the_stream_ended():
    ended: list[StreamEnded] = []

    class Recorder(StreamObserver):
        def stream_ended(self, summary: StreamEnded) -> None:
            ended.append(summary)

    made, _ = generation(Script(tokens=3, error_after=2))
    made.observer = Recorder()
    subscription = made.subscribe()
    made.start()
    await drain(subscription)
    assert ended == [StreamEnded("test", "error", 2, "provider_error")]
