"""Reasoning and tool calls through tokenwire's own API, on both transports, over real uvicorn
sockets: the same events on SSE and WebSocket; resume at any cursor inside a call's arguments
gives the exact arguments; cancel mid call; requests that make no sense, or ask a provider for
what it does not honour, are refused naming the field; messages reach the provider as given."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_ws import aconnect_ws

from tests.helpers import UvicornThread, scripted_app, serve, wait_for
from tokenwire.protocol.events import (
    Event,
    FinishReason,
    StreamEnd,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    parse_event,
)
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import (
    Script,
    ScriptedProvider,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)
from tokenwire_client import AsyncClient

USER = [{"role": "user", "content": "Plan my week"}]
RICH = Script(
    tokens=5, reasoning_tokens=6, tool_calls=3, tool_call_pieces=6, interleave_tool_calls=True
)
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[UvicornThread, ScriptedProvider]]:
    app, provider = scripted_app(RICH, overflow="coalesce", queue_maxsize=4)
    with serve(app) as running:
        yield running, provider


def without_ids(events: list[Event]) -> list[dict[str, Any]]:
    return [
        {
            k: v
            for k, v in json.loads(_json(e)).items()
            if k not in ("stream_id", "created", "request_id")
        }
        for e in events
    ]


def _json(event: Event) -> str:
    from tokenwire.protocol.events import event_json

    return event_json(event)


def arguments_by_call(events: list[Event]) -> dict[int, str]:
    joined: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            joined[event.index] = joined.get(event.index, "") + event.delta
    return joined


async def test_the_same_rich_stream_goes_out_on_sse_and_websocket(server):
    running, _ = server
    seen: dict[str, list[Event]] = {}
    for transport in ("sse", "websocket"):
        async with AsyncClient(running.base_url, transport=transport) as client:
            async with client.stream(USER) as stream:
                seen[transport] = [event async for event in stream]
            assert stream.text == scripted_text(5)  # the client's text is the answer alone
    assert without_ids(seen["sse"]) == without_ids(seen["websocket"])
    events = seen["sse"]
    reasoning = "".join(e.delta for e in events if e.type == "reasoning.delta")  # type: ignore[union-attr]  # reasoning deltas
    assert reasoning == scripted_reasoning(6)
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    ends = [e for e in events if isinstance(e, ToolCallEnd)]
    expected = scripted_tool_calls(3)
    assert [(s.call_id, s.name) for s in starts] == [(i, n) for i, n, _ in expected]
    assert [(e.call_id, e.name, e.arguments) for e in ends] == expected
    assert arguments_by_call(events) == {i: args for i, (_, _, args) in enumerate(expected)}
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason is FinishReason.TOOL_CALLS
    assert end.usage is not None and end.usage.reasoning_tokens == 6


async def _detached(client: httpx.AsyncClient, script_tokens: dict[str, Any]) -> str:
    response = await client.post(
        "/v1/streams",
        json={"messages": USER, **script_tokens},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["stream_id"])


async def _sse_after(client: httpx.AsyncClient, stream_id: str, cursor: int) -> list[Event]:
    response = await client.get(
        f"/v1/streams/{stream_id}/events", headers={"Last-Event-ID": str(cursor)}
    )
    return [
        parse_event(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]


async def _ws_after(client: httpx.AsyncClient, stream_id: str, cursor: int) -> list[Event]:
    events: list[Event] = []
    async with aconnect_ws("/v1/ws", client) as ws:
        await ws.send_json({"type": "resume", "stream_id": stream_id, "after_seq": cursor})
        while not events or not isinstance(events[-1], StreamEnd):
            events.append(parse_event(await ws.receive_text()))
    return events


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_resume_at_random_cursors_inside_the_arguments_gives_them_exactly(server, transport):
    running, provider = server
    provider.script_for = lambda params: Script(
        tokens=2, tool_calls=2, tool_call_pieces=40, interleave_tool_calls=True, interval=0.002
    )
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
            stream_id = await _detached(client, {"on_disconnect": "detach"})
            full = await _sse_after(client, stream_id, 0)  # the whole stream, to its end
            inside = [e.seq for e in full if isinstance(e, ToolCallDelta)]
            rng = random.Random(17)
            cursors = sorted(rng.sample(inside, 6))
            after = _sse_after if transport == "sse" else _ws_after
            for cursor in cursors:
                resumed = [e for e in await after(client, stream_id, cursor) if hasattr(e, "seq")]
                assert resumed[0].seq == cursor + 1  # type: ignore[union-attr]  # numbered
                before = [e for e in full if getattr(e, "seq", 0) <= cursor]
                joined = arguments_by_call(before + resumed)
                expected = scripted_tool_calls(2)
                assert joined == {0: expected[0][2], 1: expected[1][2]}
                ends = [e for e in resumed if isinstance(e, ToolCallEnd)]
                assert [(e.call_id, e.name, e.arguments) for e in ends] == expected
    finally:
        provider.script_for = None


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_a_live_resume_inside_a_call_loses_and_repeats_nothing(server, transport):
    running, provider = server
    provider.script_for = lambda params: Script(
        tokens=0, tool_calls=1, tool_call_pieces=80, interval=0.005
    )
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
            before = len(provider.records)
            stream_id = await _detached(client, {"on_disconnect": "detach"})
            await wait_for(lambda: len(provider.records) > before)  # its provider call began
            record = provider.records[-1]
            await wait_for(lambda: record.produced >= 20)
            cursor = 10  # stream.start, tool_call.start, then pieces: inside the arguments
            after = _sse_after if transport == "sse" else _ws_after
            resumed = await after(client, stream_id, cursor)
            head = [
                e for e in await _sse_after(client, stream_id, 0) if getattr(e, "seq", 0) <= cursor
            ]
            arguments = arguments_by_call(head + [e for e in resumed if hasattr(e, "seq")])
            assert arguments == {0: scripted_tool_calls(1)[0][2]}
            assert record.closed_at is not None and record.completed
    finally:
        provider.script_for = None


async def test_cancel_mid_tool_call_ends_the_stream_with_no_call_end(server, transport):
    running, provider = server
    provider.script_for = lambda params: Script(
        tokens=0, tool_calls=1, tool_call_pieces=500, interval=0.005
    )
    try:
        async with AsyncClient(running.base_url, transport=transport) as client:
            events: list[Event] = []
            async with client.stream(USER) as stream:
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ToolCallDelta) and len(events) == 5:
                        await stream.cancel()
        end = events[-1]
        assert isinstance(end, StreamEnd) and end.finish_reason is FinishReason.CANCELLED
        assert not any(isinstance(e, ToolCallEnd) for e in events)
        record = provider.records[-1]
        await wait_for(lambda: record.closed_at is not None)
        assert not record.completed and record.produced < 500
    finally:
        provider.script_for = None


BAD = [
    (
        {"messages": [*USER, {"role": "tool", "content": "sunny"}]},
        "messages.1.tool_call_id: a tool message must name the call it answers",
    ),
    (
        {
            "messages": USER,
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
            ],
        },
        "tools.0.function.parameters: invalid schema for function 'f'",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD)
async def test_a_request_that_makes_no_sense_is_a_400_naming_the_field_on_every_route(
    server, body, message
):
    running, _ = server
    async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
        native = await client.post("/v1/streams", json=body)
        assert native.status_code == 400
        assert native.json()["error"]["message"].startswith(message)
        openai_route = await client.post("/v1/chat/completions", json={"model": "scripted", **body})
        assert openai_route.status_code == 400
        error = openai_route.json()["error"]
        assert error["message"].startswith(message)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == message.split(":")[0]
        async with aconnect_ws("/v1/ws", client) as ws:
            await ws.send_json({"type": "generate", **body})
            frame = json.loads(await ws.receive_text())
            assert frame["type"] == "error" and frame["message"].startswith(message)
            await ws.send_json({"type": "ping", "id": 1})  # the socket stays open
            assert json.loads(await ws.receive_text()) == {"type": "pong", "id": 1}


async def test_a_field_the_provider_does_not_honour_is_a_400_naming_field_and_provider(server):
    running, provider = server
    provider.honours = frozenset({"tools"})  # as a provider written for tools only would
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
            refused = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "scripted",
                    "messages": USER,
                    "response_format": {"type": "json_object"},
                },
            )
            assert refused.status_code == 400
            assert refused.json()["error"]["message"] == (
                "response_format: not supported by provider 'scripted'"
            )
            unknown = await client.post(
                "/v1/chat/completions", json={"model": "scripted", "messages": USER, "top_k": 3}
            )
            assert unknown.status_code == 400
            assert unknown.json()["error"]["param"] == "extra_body.top_k"
            native = await client.post(
                "/v1/streams",
                json={
                    "messages": [
                        *USER,
                        {"role": "assistant", "content": None, "tool_calls": [CALL]},
                        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    ],
                    "tools": [TOOL],
                },
            )
            assert native.status_code == 400
            assert native.json()["error"]["message"] == (
                "messages.1.tool_calls: not supported by provider 'scripted'"
            )
            n = await client.post(
                "/v1/chat/completions", json={"model": "scripted", "messages": USER, "n": 2}
            )
            assert n.status_code == 400 and n.json()["error"]["param"] == "n"
    finally:
        del provider.honours  # back to the class's: every capability


async def test_messages_reach_the_provider_as_given_on_every_route(server):
    running, provider = server
    seen: list[GenerateParams] = []

    def script_for(params: GenerateParams) -> Script:
        seen.append(params)
        return Script(tokens=1)

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "what is it"}, image]},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]
    provider.script_for = script_for
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
            body = {"messages": messages, "tools": [TOOL], "tool_choice": "required"}
            assert (await client.post("/v1/streams", json=body)).status_code == 200
            route = await client.post("/v1/chat/completions", json={"model": "scripted", **body})
            assert route.status_code == 200, route.text
            async with aconnect_ws("/v1/ws", client) as ws:
                await ws.send_json({"type": "generate", **body})
                while json.loads(await ws.receive_text())["type"] != "stream.end":
                    pass
    finally:
        provider.script_for = None
    assert len(seen) == 3
    for params in seen:
        assert [m.to_openai() for m in params.messages] == messages
        assert params.tool_choice == "required" and params.tools is not None
