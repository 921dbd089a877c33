"""Reasoning and tool calls through ``/v1/chat/completions``, driven by the official ``openai``
SDK, unmodified, against a real uvicorn: its stream helpers (``chat.completions.stream``) and
tool-call accumulation, a whole tool round trip, parallel calls, reasoning (both spellings),
the usage's reasoning tokens, and the non-streamed form."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from pydantic import BaseModel, ConfigDict

from tests.helpers import UvicornThread, scripted_app, serve
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import (
    Script,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)

USER = [{"role": "user", "content": "What is the weather in Paris?"}]


class GetWeather(BaseModel):
    """Today's weather in a city."""

    model_config = ConfigDict(extra="forbid")

    city: str
    days: int
    note: str


class GetTime(BaseModel):
    model_config = ConfigDict(extra="forbid")

    city: str
    days: int
    note: str


def script_for(params: GenerateParams) -> Script:
    """A tool result in the conversation: answer in text. Else call as many tools as offered
    (reasoning first when a reasoning effort is asked for)."""
    reasoning = 5 if params.reasoning_effort else 0
    if params.messages[-1].role == "tool":
        return Script(tokens=6, reasoning_tokens=reasoning)
    calls = len(params.tools or ())
    return Script(tokens=0 if calls else 4, reasoning_tokens=reasoning, tool_calls=calls)


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    app, provider = scripted_app()
    provider.script_for = script_for
    with serve(app) as running:
        yield running


def sdk(server: UvicornThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_a_tool_round_trip_through_the_sdks_stream_helper(server):
    tools = [openai.pydantic_function_tool(GetWeather, name="get_weather")]
    with sdk(server) as client:
        with client.chat.completions.stream(model="scripted", messages=USER, tools=tools) as stream:
            events = list(stream)
            first = stream.get_final_completion()
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        call_id, name, arguments = scripted_tool_calls(1)[0]
        assert (call.id, call.type, call.function.name) == (call_id, "function", name)
        assert call.function.arguments == arguments  # streamed in pieces, accumulated whole
        assert call.function.parsed_arguments == GetWeather.model_validate_json(arguments)
        done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
        assert [(e.index, e.name, e.arguments) for e in done] == [(0, name, arguments)]
        assert any(e.type == "tool_calls.function.arguments.delta" for e in events)
        # the tool's result, with the assistant turn sent back as the SDK gave it
        messages = [
            *USER,
            choice.message,
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "clear"})},
        ]
        with client.chat.completions.stream(
            model="scripted", messages=messages, tools=tools
        ) as stream:
            second = stream.get_final_completion()
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == scripted_text(6)
    assert not second.choices[0].message.tool_calls


def test_parallel_tool_calls_accumulate_each_call_whole(server):
    tools = [
        openai.pydantic_function_tool(GetWeather, name="get_weather"),
        openai.pydantic_function_tool(GetTime, name="get_time"),
        {"type": "function", "function": {"name": "search_docs", "parameters": {"type": "object"}}},
    ]
    with sdk(server) as client:
        stream = client.chat.completions.create(
            model="scripted",
            messages=USER,
            tools=tools,
            parallel_tool_calls=True,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    calls: dict[int, dict[str, str]] = {}
    firsts: list[int] = []
    for chunk in chunks:
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or []:
                call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                if fragment.id:  # id, type and name only on a call's first chunk
                    firsts.append(fragment.index)
                    assert fragment.type == "function" and fragment.function.name
                    call["id"], call["name"] = fragment.id, fragment.function.name
                else:
                    assert fragment.type is None and fragment.function.name is None
                call["arguments"] += fragment.function.arguments or ""
    assert firsts == [0, 1, 2]
    assert [(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())] == (
        scripted_tool_calls(3)
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_reasoning_streams_in_both_spellings_with_its_token_count(server):
    with sdk(server) as client:
        stream = client.chat.completions.create(
            model="scripted",
            messages=USER,
            reasoning_effort="low",
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = [d.model_extra or {} for d in deltas]
    both = [r for r in reasoning if "reasoning_content" in r]
    assert all(r["reasoning"] == r["reasoning_content"] for r in both)
    assert "".join(r["reasoning_content"] for r in both) == scripted_reasoning(5)
    first_text = next(i for i, d in enumerate(deltas) if d.content)
    last_reasoning = max(i for i, r in enumerate(reasoning) if r)
    assert last_reasoning < first_text  # in the model's order
    assert "".join(d.content or "" for d in deltas) == scripted_text(4)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 9
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 5


def test_the_non_streamed_completion_carries_tool_calls_and_reasoning(server):
    tools = [openai.pydantic_function_tool(GetWeather, name="get_weather")]
    with sdk(server) as client:
        completion = client.chat.completions.create(
            model="scripted", messages=USER, tools=tools, reasoning_effort="high"
        )
        parsed = client.chat.completions.parse(model="scripted", messages=USER, tools=tools)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call_id, name, arguments = scripted_tool_calls(1)[0]
    (call,) = choice.message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (call_id, name, arguments)
    extra = choice.message.model_extra or {}
    assert extra["reasoning_content"] == extra["reasoning"] == scripted_reasoning(5)
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5
    (parsed_call,) = parsed.choices[0].message.tool_calls or []
    assert parsed_call.function.parsed_arguments == GetWeather.model_validate_json(arguments)
