"""The ``openai`` provider in front of an upstream that streams tool calls and reasoning.

Why not llama.cpp's own server (the upstream of ``test_openai_provider.py``): llama-cpp-python's
function-calling chat format (``chatml-function-calling``) refuses to stream an automatic tool
choice ("Automatic streaming tool choice is not supported"), the bundled SmolLM2's chat template
knows no tools, and that server has no reasoning output. So this module runs a small
OpenAI-compatible upstream of its own, a Starlette app on a real uvicorn port, that replays the
exact chunk sequences that OpenAI, vLLM and llama.cpp document (the source is cited beside
each), and records what it was asked. Between it and the test: tokenwire (a real uvicorn too)
and the official openai SDK, neither mocked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.helpers import UvicornThread, serve
from tokenwire.app import create_app
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    TextDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tokenwire.providers.openai import OpenAIProvider
from tokenwire.settings import Settings
from tokenwire.transports.delivery import merge_deltas
from tokenwire_client import AsyncClient

USER = [{"role": "user", "content": "What's the weather like in Paris today?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def tool_fragment(index: int, arguments: str, call_id: str | None = None, name: str | None = None):
    """One ``delta.tool_calls[]`` item as OpenAI streams it: ``id``, ``type`` and ``name`` on a
    call's first fragment, null after."""
    return {
        "index": index,
        "id": call_id,
        "type": "function" if call_id else None,
        "function": {"arguments": arguments, "name": name},
    }


# OpenAI, "Function calling" guide, section "Streaming" (platform.openai.com/docs/guides/
# function-calling): the deltas of one get_weather call, the first with id, name and empty
# arguments, then the arguments in pieces, then finish_reason "tool_calls".
OPENAI_TOOL_CALL: list[tuple[dict[str, Any], str | None]] = [
    ({"role": "assistant", "content": None}, None),
    ({"tool_calls": [tool_fragment(0, "", "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather")]}, None),
    ({"tool_calls": [tool_fragment(0, '{"')]}, None),
    ({"tool_calls": [tool_fragment(0, "location")]}, None),
    ({"tool_calls": [tool_fragment(0, '":"')]}, None),
    ({"tool_calls": [tool_fragment(0, "Paris")]}, None),
    ({"tool_calls": [tool_fragment(0, ",")]}, None),
    ({"tool_calls": [tool_fragment(0, " France")]}, None),
    ({"tool_calls": [tool_fragment(0, '"}')]}, None),
    ({}, "tool_calls"),
]
OPENAI_ARGUMENTS = '{"location":"Paris, France"}'

# OpenAI parallel function calling (same guide, "Parallel function calling"; API reference,
# "The chat completion chunk object": each tool_calls[] fragment names its call by index): two
# calls; here their argument pieces interleave, which the chunk format allows.
OPENAI_PARALLEL: list[tuple[dict[str, Any], str | None]] = [
    ({"role": "assistant", "content": None}, None),
    ({"tool_calls": [tool_fragment(0, "", "call_a", "get_weather")]}, None),
    ({"tool_calls": [tool_fragment(1, "", "call_b", "get_weather")]}, None),
    ({"tool_calls": [tool_fragment(0, '{"location":')]}, None),
    ({"tool_calls": [tool_fragment(1, '{"location":')]}, None),
    ({"tool_calls": [tool_fragment(1, '"Oslo"}')]}, None),
    ({"tool_calls": [tool_fragment(0, '"Paris"}')]}, None),
    ({}, "tool_calls"),
]
# OpenAI API reference, "The chat completion object", usage.completion_tokens_details.
OPENAI_USAGE = {
    "prompt_tokens": 81,
    "completion_tokens": 40,
    "total_tokens": 121,
    "completion_tokens_details": {"reasoning_tokens": 12},
}

# vLLM, "Reasoning Outputs" (docs.vllm.ai, features/reasoning_outputs; the field is `reasoning`
# since PR vllm-project/vllm#27752, `reasoning_content` before): reasoning deltas, then content.
# The usage chunk with "choices": null is vLLM's (as OpenAI client libraries for Rust note).
VLLM_REASONING: list[tuple[dict[str, Any], str | None]] = [
    ({"role": "assistant", "content": ""}, None),
    ({"reasoning": "9.11 has"}, None),
    ({"reasoning": " a smaller tenths digit."}, None),
    ({"content": "9.8"}, None),
    ({"content": " is greater."}, "stop"),
]

# llama.cpp llama-server, tools/server/README.md (`--reasoning-format deepseek`: thoughts in
# delta.reasoning_content) and docs/function-calling.md (tool calls streamed as OpenAI's, id and
# name first): reasoning, then one call.
LLAMACPP_REASONING_TOOL: list[tuple[dict[str, Any], str | None]] = [
    ({"role": "assistant", "content": None}, None),
    ({"reasoning_content": "The user wants weather;"}, None),
    ({"reasoning_content": " call the tool."}, None),
    ({"tool_calls": [tool_fragment(0, "", "z5gWD3fPpRAQyqTc", "get_weather")]}, None),
    ({"tool_calls": [tool_fragment(0, '{"location": "Paris"}')]}, None),
    ({}, "tool_calls"),
]

# Malformed (no vendor documents it: what a buggy upstream sends): text, a good call, then
# arguments of a call whose first fragment (id, name) never came.
MALFORMED: list[tuple[dict[str, Any], str | None]] = [
    ({"role": "assistant", "content": "Checking."}, None),
    ({"tool_calls": [tool_fragment(0, "", "call_ok", "get_weather")]}, None),
    ({"tool_calls": [tool_fragment(0, '{"location":"Paris"}')]}, None),
    ({"tool_calls": [tool_fragment(1, '{"location":')]}, None),
    ({}, "tool_calls"),
]

# Azure OpenAI content filtering ("Content filtering" concept page): finish_reason
# "content_filter" ends a stream whose output the filter withheld.
CONTENT_FILTER = [({"role": "assistant", "content": "Here"}, None), ({}, "content_filter")]
# A finish reason no vendor documents for chat completions.
UNKNOWN_FINISH = [({"role": "assistant", "content": "Done"}, None), ({}, "abort")]

SCENARIOS = {
    "openai-tool": (OPENAI_TOOL_CALL, None),
    "openai-parallel": (OPENAI_PARALLEL, OPENAI_USAGE),
    "vllm-reasoning": (
        VLLM_REASONING,
        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    ),
    "llamacpp-reasoning-tool": (LLAMACPP_REASONING_TOOL, None),
    "malformed": (MALFORMED, None),
    "content-filter": (CONTENT_FILTER, None),
    "unknown-finish": (UNKNOWN_FINISH, None),
}


class Replay:
    """The upstream: ``POST /v1/chat/completions`` streams the scenario its ``model`` names
    and keeps every request body in :attr:`requests`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> StreamingResponse:
        body = await request.json()
        self.requests.append(body)
        deltas, usage = SCENARIOS[body["model"]]
        return StreamingResponse(
            self._frames(body["model"], deltas, usage), media_type="text/event-stream"
        )

    async def _frames(
        self, model: str, deltas: list[tuple[dict[str, Any], str | None]], usage: Any
    ) -> AsyncIterator[bytes]:
        for delta, finish in deltas:
            chunk = {
                "id": "chatcmpl-replay",
                "object": "chat.completion.chunk",
                "created": 1767225600,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        if usage is not None:
            choices = None if model.startswith("vllm") else []
            chunk = {
                "id": "chatcmpl-replay",
                "object": "chat.completion.chunk",
                "created": 1767225600,
                "model": model,
                "choices": choices,
                "usage": usage,
            }
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[UvicornThread, Replay]]:
    replay = Replay()
    with serve(replay.app) as running:
        yield running, replay


@pytest.fixture(scope="module")
def tokenwire(upstream) -> Iterator[UvicornThread]:
    running, _ = upstream
    provider = OpenAIProvider(base_url=running.base_url + "/v1", api_key=None, model="openai-tool")
    app = create_app(Settings(provider="openai"), provider=provider)
    with serve(app) as server:
        yield server


def sdk(server: UvicornThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


async def native(
    server: UvicornThread, model: str, transport: str = "sse", **fields: Any
) -> list[Event]:
    async with AsyncClient(server.base_url, transport=transport) as client:
        async with client.stream(USER, model=model, **fields) as stream:
            return [event async for event in stream]


def test_openais_documented_tool_call_reaches_the_sdk_whole_and_the_tools_go_upstream(
    tokenwire, upstream
):
    _, replay = upstream
    with sdk(tokenwire) as client:
        with client.chat.completions.stream(
            model="openai-tool", messages=USER, tools=[WEATHER], tool_choice="auto", user="u-1"
        ) as stream:
            completion = stream.get_final_completion()
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        assert (call.id, call.function.name) == ("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather")
        assert call.function.arguments == OPENAI_ARGUMENTS
        asked = replay.requests[-1]
        assert asked["tools"] == [WEATHER] and asked["tool_choice"] == "auto"
        assert asked["user"] == "u-1"
        # the tool's result turn goes upstream exactly as OpenAI takes it
        messages = [
            *USER,
            choice.message,
            {"role": "tool", "tool_call_id": call.id, "content": "18 C, clear"},
        ]
        client.chat.completions.create(model="vllm-reasoning", messages=messages, tools=[WEATHER])
    assert replay.requests[-1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",  # the SDK's accumulation of the role chunk's content ""
            "tool_calls": [
                {
                    "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": OPENAI_ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "content": "18 C, clear", "tool_call_id": "call_DdmO9pD3xa9XTPNJ32zg2hcA"},
    ]


async def test_interleaved_parallel_calls_and_reasoning_tokens_on_both_transports(tokenwire):
    seen = {t: await native(tokenwire, "openai-parallel", t) for t in ("sse", "websocket")}
    for events in seen.values():
        starts = [(e.index, e.call_id) for e in events if isinstance(e, ToolCallStart)]
        assert starts == [(0, "call_a"), (1, "call_b")]
        ends = [(e.index, e.arguments) for e in events if isinstance(e, ToolCallEnd)]
        assert ends == [(0, '{"location":"Paris"}'), (1, '{"location":"Oslo"}')]
        end = events[-1]
        assert isinstance(end, StreamEnd) and end.finish_reason is FinishReason.TOOL_CALLS
        assert end.usage is not None and end.usage.reasoning_tokens == 12
        assert end.usage.completion_tokens == 40
    # Either transport may coalesce adjacent deltas of one call into one frame (the pump does
    # when the client is behind), so compare the streams with every run of deltas merged.
    strip = [
        [(e.type, getattr(e, "seq", None), getattr(e, "delta", None)) for e in merge_deltas(events)]
        for events in seen.values()
    ]
    assert strip[0] == strip[1]


async def test_vllm_reasoning_becomes_reasoning_deltas_and_both_spellings_on_the_openai_route(
    tokenwire,
):
    events = await native(tokenwire, "vllm-reasoning")
    reasoning = "".join(e.delta for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == "9.11 has a smaller tenths digit."
    assert "".join(e.delta for e in events if isinstance(e, TextDelta)) == "9.8 is greater."
    assert events[-1].finish_reason is FinishReason.STOP  # type: ignore[union-attr]  # a StreamEnd
    with sdk(tokenwire) as client:
        chunks = list(
            client.chat.completions.create(model="vllm-reasoning", messages=USER, stream=True)
        )
    extras = [c.choices[0].delta.model_extra or {} for c in chunks if c.choices]
    assert "".join(x.get("reasoning", "") for x in extras) == reasoning
    assert "".join(x.get("reasoning_content", "") for x in extras) == reasoning


def test_llamacpp_reasoning_content_and_tool_call_non_streamed(tokenwire):
    with sdk(tokenwire) as client:
        completion = client.chat.completions.create(
            model="llamacpp-reasoning-tool", messages=USER, tools=[WEATHER]
        )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert (message.model_extra or {})[
        "reasoning_content"
    ] == "The user wants weather; call the tool."
    (call,) = message.tool_calls or []
    assert (call.id, call.function.arguments) == ("z5gWD3fPpRAQyqTc", '{"location": "Paris"}')


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_malformed_fragments_are_an_error_then_the_end_and_nothing_before_is_lost(
    tokenwire, transport
):
    events = await native(tokenwire, "malformed", transport)
    assert [e.type for e in events] == [
        "stream.start",
        "text.delta",
        "tool_call.start",
        "tool_call.delta",
        "error",
        "stream.end",
    ]
    assert events[1].delta == "Checking."  # type: ignore[union-attr]  # a TextDelta
    assert events[3].delta == '{"location":"Paris"}'  # type: ignore[union-attr]  # a ToolCallDelta
    error = events[-2]
    assert isinstance(error, ErrorEvent) and error.code == "provider_error"
    assert "malformed tool call: tool call 1 began without an id" in error.message
    assert events[-1].finish_reason is FinishReason.ERROR  # type: ignore[union-attr]  # a StreamEnd


def test_malformed_fragments_reach_the_sdk_as_an_api_error_after_the_good_part(tokenwire):
    received: list[str] = []
    with sdk(tokenwire) as client, pytest.raises(openai.APIError, match="malformed tool call"):
        for chunk in client.chat.completions.create(model="malformed", messages=USER, stream=True):
            for choice in chunk.choices:
                received.append(choice.delta.content or "")
                for fragment in choice.delta.tool_calls or []:
                    received.append(fragment.function.arguments or "")
    assert "".join(received) == 'Checking.{"location":"Paris"}'


async def test_finish_reasons_content_filter_kept_unknown_ones_are_errors_not_stop(tokenwire):
    filtered = await native(tokenwire, "content-filter")
    assert filtered[-1].finish_reason is FinishReason.CONTENT_FILTER  # type: ignore[union-attr]  # a StreamEnd
    unknown = await native(tokenwire, "unknown-finish")
    assert "".join(e.delta for e in unknown if isinstance(e, TextDelta)) == "Done"
    error = unknown[-2]
    assert isinstance(error, ErrorEvent) and "unknown finish_reason 'abort'" in error.message
    assert unknown[-1].finish_reason is FinishReason.ERROR  # type: ignore[union-attr]  # a StreamEnd


def test_every_openai_field_goes_upstream_as_given(tokenwire, upstream):
    _, replay = upstream
    fields: dict[str, Any] = {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
        },
        "reasoning_effort": "low",
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"1734": -100},
        "parallel_tool_calls": False,
        "metadata": {"run": "7"},
        "seed": 3,
        "service_tier": "flex",
        "verbosity": "low",
        "prompt_cache_key": "k",
        "safety_identifier": "s",
    }
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
    }
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}]
    with sdk(tokenwire) as client:
        client.chat.completions.create(
            model="vllm-reasoning",
            messages=messages,
            tools=[WEATHER],
            extra_body={"top_k": 20},
            **fields,
        )
    asked = replay.requests[-1]
    assert {key: asked.get(key) for key in fields} == fields
    assert asked["top_k"] == 20 and asked["tools"] == [WEATHER]
    assert asked["messages"] == messages
