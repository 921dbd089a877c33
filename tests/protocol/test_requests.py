"""Requests, pure: the whole OpenAI chat message and tool fields parse; what a request means is
checked (HTTP 400 naming the field); what it asks of a provider is listed, and a provider
refuses what it does not honour."""

from __future__ import annotations

from typing import Any

import pytest

from tokenwire.errors import InvalidRequest
from tokenwire.protocol.openai import ChatCompletionRequest
from tokenwire.protocol.requests import ChatMessage, GenerateParams, check_conversation
from tokenwire.providers.local import LocalProvider
from tokenwire.providers.openai import OpenAIProvider, upstream_request

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
ROUND_TRIP = [
    {"role": "developer", "content": "Be brief."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "?"}],
    },
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]


def params(**fields: Any) -> GenerateParams:
    return GenerateParams.model_validate({"messages": ROUND_TRIP, **fields})


def test_a_tool_round_trip_parses_and_goes_upstream_as_openai_takes_it():
    request = params(tools=[TOOL], tool_choice="auto", parallel_tool_calls=False)
    check_conversation(request)
    sent = upstream_request(request, "m")
    assert sent["messages"] == [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Weather ?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]
    assert sent["tools"] == [TOOL]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("auto", False)


def test_image_parts_are_kept_as_given():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    message = ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "what is it"}, image]}
    )
    assert message.content == "what is it"
    assert message.to_openai()["content"] == [{"type": "text", "text": "what is it"}, image]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({3: {"role": "tool", "content": "sunny"}}, "messages.3.tool_call_id"),
        ({0: {"role": "user", "content": "x", "tool_call_id": "c"}}, "messages.0.tool_call_id"),
        ({0: {"role": "user", "content": "x", "tool_calls": [CALL]}}, "messages.0.tool_calls"),
        ({0: {"role": "user", "content": None}}, "messages.0.content"),
        (
            {
                2: {
                    "role": "assistant",
                    "content": [{"type": "image_url", "image_url": {"url": "u"}}],
                }
            },
            "messages.2.content",
        ),
    ],
)
def test_a_conversation_that_makes_no_sense_is_refused_naming_the_field(change, field):
    messages = [change.get(i, message) for i, message in enumerate(ROUND_TRIP)]
    request = GenerateParams.model_validate({"messages": messages, "tools": [TOOL]})
    with pytest.raises(InvalidRequest) as refused:
        check_conversation(request)
    assert refused.value.message.startswith(field + ":")
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "string"}, "type 'object'"),
        ({"type": "object", "properties": {"city": {"type": "text"}}}, "'text' is not"),
        ({"type": "object", "properties": ["city"]}, "properties must be an object"),
        ({"type": "object", "required": "city"}, "required must be a list"),
        ({"type": "object", "properties": {"city": 3}}, "properties.city must be an object"),
    ],
)
def test_a_tool_with_a_bad_schema_is_refused_naming_it(schema, says):
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    with pytest.raises(InvalidRequest) as refused:
        check_conversation(params(tools=[tool]))
    assert refused.value.message.startswith("tools.0.function.parameters: invalid schema")
    assert says in refused.value.message


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls"),
        ({"tools": [TOOL, TOOL]}, "tools.1.function.name"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
    ],
)
def test_tool_fields_that_contradict_each_other_are_refused(fields, field):
    messages = ROUND_TRIP[:2]
    request = GenerateParams.model_validate({"messages": messages, **fields})
    with pytest.raises(InvalidRequest) as refused:
        check_conversation(request)
    assert refused.value.message.startswith(field)


def test_requested_fields_name_every_capability_a_request_uses():
    request = params(tools=[TOOL], reasoning_effort="low", extra_body={"top_k": 5})
    assert request.requested_fields() == [
        ("tools", "tools"),
        ("reasoning_effort", "reasoning_effort"),
        ("extra_body", "extra_body.top_k"),
        ("tool_calls", "messages.2.tool_calls"),
        ("tool_messages", "messages.3.role"),
    ]
    plain = GenerateParams.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "seed": 1}
    )
    assert plain.requested_fields() == []  # core fields: every provider honours them


def test_the_local_provider_refuses_tools_naming_field_and_provider():
    local = LocalProvider()
    local.check_honoured(GenerateParams.model_validate({"messages": ROUND_TRIP[:2], "top_p": 0.5}))
    with pytest.raises(InvalidRequest) as refused:
        local.check_honoured(params(tools=[TOOL]))
    assert refused.value.message == "tools: not supported by provider 'local'"
    assert refused.value.param == "tools"
    with pytest.raises(InvalidRequest, match=r"^messages\.2\.tool_calls: .* 'local'"):
        local.check_honoured(params())
    OpenAIProvider(base_url=None, api_key=None, model="m").check_honoured(
        params(tools=[TOOL], logit_bias={"42": -100}, extra_body={"top_k": 5})
    )


def test_the_openai_request_keeps_unknown_fields_for_the_upstream_and_refuses_what_cannot_return():
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": ROUND_TRIP[:2], "top_k": 40, "max_completion_tokens": 9}
    )
    converted = body.to_generate_params()
    assert converted.extra_body == {"top_k": 40} and converted.max_tokens == 9
    assert converted.requested_fields() == [("extra_body", "extra_body.top_k")]
    for field, value in [("n", 2), ("logprobs", True), ("functions", [{"name": "f"}])]:
        refused = ChatCompletionRequest.model_validate(
            {"model": "m", "messages": ROUND_TRIP[:2], field: value}
        ).refused()
        assert refused is not None and refused[0] == field
    assert (
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": ROUND_TRIP[:2], "n": 1, "logprobs": False}
        ).refused()
        is None
    )
