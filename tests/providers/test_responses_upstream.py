"""The Responses API in front of the ``openai`` provider: the replaying OpenAI-compatible
upstream of ``test_openai_rich_upstream.py`` (OpenAI's documented tool call, vLLM's reasoning
and llama.cpp's reasoning + call, chunk for chunk) behind tokenwire, and the official openai
SDK's ``responses`` in front; the function tools go upstream in Chat Completions form."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.helpers import UvicornThread, serve
from tests.providers.test_openai_rich_upstream import OPENAI_ARGUMENTS, Replay
from tokenwire.app import create_app
from tokenwire.providers.openai import OpenAIProvider
from tokenwire.settings import Settings

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[UvicornThread, Replay]]:
    replay = Replay()
    with serve(replay.app) as upstream:
        provider = OpenAIProvider(
            base_url=upstream.base_url + "/v1", api_key=None, model="openai-tool"
        )
        app = create_app(Settings(provider="openai"), provider=provider)
        with serve(app) as tokenwire:
            yield tokenwire, replay


def sdk(server: UvicornThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_an_upstream_tool_call_is_a_function_call_item_and_the_tools_go_upstream(servers):
    tokenwire, replay = servers
    with sdk(tokenwire) as client:
        with client.responses.create(
            model="openai-tool", input="Weather in Paris?", tools=[WEATHER], stream=True
        ) as stream:
            events = list(stream)
    response = events[-1].response
    assert response.status == "completed"
    ((call),) = response.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == (
        "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        "get_weather",
        OPENAI_ARGUMENTS,
    )
    assert replay.requests[-1]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]


@pytest.mark.parametrize(
    ("model", "reasoning", "text"),
    [
        ("vllm-reasoning", "9.11 has a smaller tenths digit.", "9.8 is greater."),
        ("llamacpp-reasoning-tool", "The user wants weather; call the tool.", ""),
    ],
)
def test_upstream_reasoning_becomes_a_reasoning_item(servers, model, reasoning, text):
    tokenwire, _ = servers
    with sdk(tokenwire) as client:
        with client.responses.create(model=model, input="Which is greater?", stream=True) as s:
            events = list(s)
        thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
        assert thought == reasoning
        response = client.responses.create(model=model, input="Which is greater?")
    assert response.output[0].type == "reasoning"
    assert response.output_text == text
