"""Generation with no socket: a scripted provider in, the event list out (from a subscription
and from the stream log), for the endings a stream can have."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from tokenwire.errors import ErrorCode
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    ToolCallDelta,
    ToolCallEnd,
)
from tokenwire.protocol.requests import ChatMessage, GenerateParams
from tokenwire.providers.base import Delta, Finish, ProviderEvent, ToolArguments, ToolCall
from tokenwire.providers.scripted import (
    Script,
    ScriptedProvider,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)
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


# -- reasoning and tool calls -------------------------------------------------------------


async def test_reasoning_text_and_tool_calls_come_in_the_providers_order():
    made, log = generation(Script(tokens=3, reasoning_tokens=4, tool_calls=2, tool_call_pieces=3))
    subscription = made.subscribe()
    made.start()
    events = await drain(subscription)
    kinds = [event.type for event in events]
    assert kinds == (
        ["stream.start"]
        + ["reasoning.delta"] * 4
        + ["text.delta"] * 3
        + ["tool_call.start"]
        + ["tool_call.delta"] * 3
        + ["tool_call.start"]
        + ["tool_call.delta"] * 3
        + ["tool_call.end"] * 2
        + ["stream.end"]
    )
    assert [getattr(event, "seq", None) for event in events] == list(range(1, len(events) + 1))
    reasoning = "".join(e.delta for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == scripted_reasoning(4)
    ends = [e for e in events if isinstance(e, ToolCallEnd)]
    assert [(e.call_id, e.name, e.arguments) for e in ends] == scripted_tool_calls(2)
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason is FinishReason.TOOL_CALLS
    assert end.usage is not None and end.usage.reasoning_tokens == 4
    assert end.usage.completion_tokens == 4 + 3 + 6
    reader = await log.open_reader("str_test", 0)
    assert reader.catch_up == events  # the log keeps the rich events as they went out


async def test_interleaved_parallel_calls_end_at_the_finish_in_index_order_whole():
    made, _ = generation(
        Script(tokens=0, tool_calls=3, tool_call_pieces=5, interleave_tool_calls=True)
    )
    subscription = made.subscribe()
    made.start()
    events = await drain(subscription)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [e.index for e in deltas[:3]] == [0, 1, 2]  # the pieces really interleave
    first_end = next(i for i, e in enumerate(events) if isinstance(e, ToolCallEnd))
    assert all(not isinstance(e, ToolCallDelta) for e in events[first_end:])
    ends = [e for e in events if isinstance(e, ToolCallEnd)]
    assert [e.index for e in ends] == [0, 1, 2]
    for call in ends:
        joined = "".join(e.delta for e in deltas if e.index == call.index)
        assert call.arguments == joined == scripted_tool_calls(3)[call.index][2]


async def test_cancel_mid_tool_call_ends_no_call():
    made, _ = generation(Script(tokens=0, tool_calls=1, tool_call_pieces=200, interval=0.005))
    subscription = made.subscribe()
    made.start()
    await asyncio.sleep(0.05)
    assert made.cancel()
    events = await drain(subscription)
    assert any(isinstance(e, ToolCallDelta) for e in events)
    assert not any(isinstance(e, ToolCallEnd) for e in events)
    assert events[-1].finish_reason is FinishReason.CANCELLED  # type: ignore[union-attr]  # a StreamEnd


class _BrokenToolProvider(ScriptedProvider):
    """Sends arguments of a call that never began, after a little text."""

    def stream(self, params: GenerateParams, model: str) -> AsyncGenerator[ProviderEvent, None]:
        async def run() -> AsyncGenerator[ProviderEvent, None]:
            yield Delta("before")
            yield ToolCall(0, "call_0", "f")
            yield ToolArguments(0, '{"a":')
            yield ToolArguments(1, "1}")
            yield Finish(FinishReason.TOOL_CALLS)

        return run()


async def test_arguments_of_a_call_never_begun_fail_the_stream_keeping_what_came():
    log = MemoryStreamLog(max_events=100, max_bytes=1 << 20, ttl=60)
    made = Generation(
        "str_bad", _BrokenToolProvider(), PARAMS, model="scripted", log=log, transport="test"
    )
    subscription = made.subscribe()
    made.start()
    events = await drain(subscription)
    assert [e.type for e in events] == [
        "stream.start",
        "text.delta",
        "tool_call.start",
        "tool_call.delta",
        "error",
        "stream.end",
    ]
    error = events[-2]
    assert isinstance(error, ErrorEvent) and error.code is ErrorCode.PROVIDER_ERROR
    assert "never began" in error.message
    assert events[-1].finish_reason is FinishReason.ERROR  # type: ignore[union-attr]  # a StreamEnd
