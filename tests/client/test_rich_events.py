"""The Python client gathers a rich stream (reasoning, then text, then tool calls) over both
transports, against a real uvicorn with the scripted provider: ``reasoning``, ``text`` and the
complete ``tool_calls`` are exactly what the provider sent, also when the connection is cut in
the middle of a call's arguments and the stream is resumed."""

from __future__ import annotations

import json

from tests.client.test_client import FAST, USER, drop_connections
from tests.helpers import scripted_app, serve
from tokenwire.protocol.events import (
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tokenwire.providers.scripted import (
    Script,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)
from tokenwire_client import AsyncClient, Client, ToolCall

RICH = Script(tokens=6, reasoning_tokens=5, tool_calls=2, tool_call_pieces=3)


def expected_calls(count: int) -> list[ToolCall]:
    return [
        ToolCall(index, call_id, name, arguments)
        for index, (call_id, name, arguments) in enumerate(scripted_tool_calls(count))
    ]


async def test_reasoning_text_and_tool_calls_are_gathered(transport):
    app, _ = scripted_app(RICH)
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            async with client.stream(USER) as stream:
                events = [event async for event in stream]
    kinds = [type(event) for event in events]
    runs = [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] is not kind]
    # (adjacent deltas of one kind may be coalesced: their runs, not their counts, are fixed)
    assert runs[:4] == [StreamStart, ReasoningDelta, TextDelta, ToolCallStart]
    assert runs[-1] is StreamEnd and ToolCallDelta in runs
    assert kinds.count(ToolCallStart) == kinds.count(ToolCallEnd) == 2
    assert stream.reasoning == scripted_reasoning(5)
    assert stream.text == scripted_text(6)
    assert stream.tool_calls == expected_calls(2)
    assert json.loads(stream.tool_calls[1].arguments)["city"] == "Lagos"
    assert stream.end is not None and stream.end.finish_reason == "tool_calls"


async def test_parallel_calls_are_kept_apart_by_index(transport):
    app, _ = scripted_app(
        Script(tokens=0, tool_calls=3, tool_call_pieces=4, interleave_tool_calls=True)
    )
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            async with client.stream(USER) as stream:
                async for _ in stream:
                    pass
    assert (stream.text, stream.reasoning) == ("", "")
    assert sorted(stream.tool_calls, key=lambda call: call.index) == expected_calls(3)


async def test_a_drop_inside_a_calls_arguments_is_resumed_exactly(transport):
    app, provider = scripted_app(
        Script(tokens=2, reasoning_tokens=3, tool_calls=2, tool_call_pieces=40, interval=0.01)
    )
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport, reconnect=FAST) as client:
            async with client.stream(USER) as stream:
                pieces = 0
                async for event in stream:
                    if isinstance(event, ToolCallDelta):
                        pieces += 1
                        if pieces == 10:
                            assert drop_connections(server) >= 1
    assert stream.reconnects >= 1
    assert stream.reasoning == scripted_reasoning(3) and stream.text == scripted_text(2)
    assert stream.tool_calls == expected_calls(2)
    assert len(provider.records) == 1 and provider.records[0].completed


def test_the_blocking_client_exposes_them_too(transport):
    app, _ = scripted_app(RICH)
    with serve(app) as server, Client(server.base_url, transport=transport) as client:
        with client.stream(USER) as stream:
            for _ in stream:
                pass
    assert stream.reasoning == scripted_reasoning(5)
    assert stream.text == scripted_text(6)
    assert stream.tool_calls == expected_calls(2)
