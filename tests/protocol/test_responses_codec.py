"""The OpenAI Responses codec, pure: byte-exact frames, the sequence_number rules (a replay
from the log reproduces every number; merged deltas name the same point in the text), the
Response object against the openai SDK's own pydantic types, and the request mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tokenwire.errors import ErrorCode, InvalidRequest
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenwire.protocol.responses import (
    ResponsesEncoder,
    ResponsesRequest,
    encode_json,
    encode_sse,
    input_messages,
    ws_error,
)
from tokenwire.transports.delivery import merge_deltas

STREAM_EVENTS = TypeAdapter(ResponseStreamEvent)
ECHO = ResponsesRequest(model="m", input="hi").echo("m")


def encoder(**options: Any) -> ResponsesEncoder:
    return ResponsesEncoder("resp_abc", 1767225600, ECHO, **options)


def rich_stream() -> list[Event]:
    """reasoning x2, text x3, two tool calls (args in two pieces each), the end."""
    events: list[Any] = [StreamStart(stream_id="s", seq=1, model="m", created=1767225600)]

    def add(make: Any, **fields: Any) -> None:
        events.append(make(stream_id="s", seq=len(events) + 1, **fields))

    add(ReasoningDelta, delta="Let me")
    add(ReasoningDelta, delta=" think")
    add(TextDelta, delta="Hel")
    add(TextDelta, delta="lo")
    add(TextDelta, delta="!")
    add(ToolCallStart, index=0, call_id="call_1", name="get_weather")
    add(ToolCallDelta, index=0, delta='{"city":')
    add(ToolCallDelta, index=0, delta='"Paris"}')
    add(ToolCallStart, index=1, call_id="call_2", name="get_time")
    add(ToolCallDelta, index=1, delta="{}")
    add(ToolCallEnd, index=0, call_id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    add(ToolCallEnd, index=1, call_id="call_2", name="get_time", arguments="{}")
    usage = Usage(prompt_tokens=4, completion_tokens=9, total_tokens=13, reasoning_tokens=2)
    add(StreamEnd, finish_reason=FinishReason.TOOL_CALLS, usage=usage)
    return events


def feed_all(enc: ResponsesEncoder, events: list[Event]) -> list[dict[str, Any]]:
    return [out for event in events for out in enc.feed(event)]


def test_a_short_stream_is_framed_byte_for_byte_as_openai_sends_it():
    enc = encoder()
    start = StreamStart(stream_id="s", seq=1, model="m", created=1767225600)
    frames = encode_sse(enc.feed(start))
    assert frames.startswith(
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
        b'"response":{"id":"resp_abc","object":"response","created_at":1767225600,'
        b'"status":"in_progress","background":false,"completed_at":null,"error":null,'
    )
    assert frames.count(b"\n\n") == 2 and b"event: response.in_progress\n" in frames
    assert encode_sse(enc.feed(TextDelta(stream_id="s", seq=2, delta="Hi\n"))) == (
        b'event: response.output_item.added\ndata: {"type":"response.output_item.added",'
        b'"sequence_number":2,"output_index":0,"item":{"id":"msg_abc_0","type":"message",'
        b'"status":"in_progress","role":"assistant","content":[]}}\n\n'
        b'event: response.content_part.added\ndata: {"type":"response.content_part.added",'
        b'"sequence_number":3,"item_id":"msg_abc_0","output_index":0,"content_index":0,'
        b'"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"sequence_number":4,"item_id":"msg_abc_0","output_index":0,"content_index":0,'
        b'"delta":"Hi\\n","logprobs":[]}\n\n'
    )
    end = StreamEnd(stream_id="s", seq=3, finish_reason=FinishReason.STOP, usage=Usage.of(1, 1))
    types = [event["type"] for event in enc.feed(end)]
    assert types == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert b"[DONE]" not in frames


def test_every_event_and_the_object_validate_against_the_sdks_types():
    enc = encoder()
    out = feed_all(enc, rich_stream())
    assert [event["sequence_number"] for event in out] == list(range(len(out)))
    for event in out:
        STREAM_EVENTS.validate_python(event)  # strict pydantic validation, not construct()
    response = Response.model_validate(enc.response())
    assert response.status == "completed"
    assert response.output_text == "Hello!"
    assert [item.type for item in response.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 2
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}'),
        ("call_2", "get_time", "{}"),
    ]
    types = [event["type"] for event in out]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.reasoning_text.delta") == 2
    assert types.count("response.function_call_arguments.done") == 2
    assert types[-1] == "response.completed"


def test_a_replay_reproduces_every_event_and_number_and_resumes_after_any_of_them():
    events = rich_stream()
    full = feed_all(encoder(), events)
    assert feed_all(encoder(), events) == full  # deterministic
    for n in range(-1, len(full)):
        assert feed_all(encoder(after=n), events) == full[n + 1 :]


@pytest.mark.parametrize("cut", range(1, 16))
def test_merged_deltas_name_the_same_point_so_a_resume_after_any_event_is_exact(cut):
    """A live consumer gets adjacent deltas merged (write merging, coalescing). Whatever it saw
    last, the replay after that number completes the text with no gap and no duplicate."""
    events: list[Any] = [StreamStart(stream_id="s", seq=1, model="m", created=0)]
    words = [f"w{i} " for i in range(12)]
    for word in words[:4]:
        events.append(ReasoningDelta(stream_id="s", seq=len(events) + 1, delta=word))
    for word in words[4:]:
        events.append(TextDelta(stream_id="s", seq=len(events) + 1, delta=word))
    events.append(
        StreamEnd(stream_id="s", seq=len(events) + 1, finish_reason=FinishReason.STOP, usage=None)
    )
    live = feed_all(
        encoder(), [events[0], *merge_deltas(events[1:3]), *merge_deltas(events[3:9]), *events[9:]]
    )
    numbers = [event["sequence_number"] for event in live]
    assert numbers == sorted(set(numbers))  # strictly increasing
    seen = live[:cut]
    resumed = feed_all(encoder(after=seen[-1]["sequence_number"]), events)

    def text(out: list[dict[str, Any]], kind: str) -> str:
        return "".join(e["delta"] for e in out if e["type"] == f"response.{kind}.delta")

    for kind in ("reasoning_text", "output_text"):
        assert text(seen, kind) + text(resumed, kind) == text(feed_all(encoder(), events), kind)
    assert [e["type"] for e in seen + resumed if e["type"].endswith(".added")] == [
        "response.output_item.added",
        "response.content_part.added",
    ] * 2


@pytest.mark.parametrize(
    ("finish", "kind", "status", "incomplete"),
    [
        (FinishReason.LENGTH, "response.incomplete", "incomplete", {"reason": "max_output_tokens"}),
        (FinishReason.CANCELLED, "response.incomplete", "cancelled", None),
        (FinishReason.ERROR, "response.failed", "failed", None),
    ],
)
def test_terminal_events_by_finish_reason(finish, kind, status, incomplete):
    enc = encoder()
    events: list[Event] = [
        StreamStart(stream_id="s", seq=1, model="m", created=0),
        TextDelta(stream_id="s", seq=2, delta="par"),
        ToolCallStart(stream_id="s", seq=3, index=0, call_id="c", name="f"),
    ]
    if finish is FinishReason.ERROR:
        events.append(
            ErrorEvent(stream_id="s", seq=4, code=ErrorCode.PROVIDER_ERROR, message="boom")
        )
    events.append(StreamEnd(stream_id="s", seq=len(events) + 1, finish_reason=finish, usage=None))
    out = feed_all(enc, events)
    assert out[-1]["type"] == kind
    response = Response.model_validate(out[-1]["response"])
    assert (response.status, enc.response()["incomplete_details"]) == (status, incomplete)
    # the message was closed (completed) when the call began; the call never ended
    assert [getattr(item, "status", None) for item in response.output] == [
        "completed",
        "incomplete",
    ]
    if finish is FinishReason.ERROR:
        assert response.error is not None and response.error.message == "boom"


def test_websocket_frames_carry_the_lane_and_errors_take_the_ws_error_shape():
    enc = encoder(lane="left")
    frames = encode_json(enc.feed(StreamStart(stream_id="s", seq=1, model="m", created=0)))
    assert all(json.loads(frame)["stream_id"] == "left" for frame in frames)
    assert json.loads(ws_error("response_already_in_flight", "busy", status=400)) == {
        "type": "error",
        "status": 400,
        "error": {
            "message": "busy",
            "type": "invalid_request_error",
            "param": None,
            "code": "response_already_in_flight",
        },
    }


def test_input_items_map_onto_chat_messages():
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "hm"}],
        },
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "18 C"},
        {"type": "function_call_output", "call_id": "c2", "output": "noon"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Warm.", "annotations": []}],
        },
        {
            "role": "user",
            "content": [
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}
            ],
        },
    ]
    assert input_messages(items) == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
            "reasoning_content": "hm",
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
        {"role": "assistant", "content": "Warm."},
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                }
            ],
        },
    ]
    assert "reasoning_content" not in input_messages(items, keep_reasoning=False)[1]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "tools": [], "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ],
)
def test_what_cannot_be_mapped_is_refused_naming_the_field(body, param):
    request = ResponsesRequest.model_validate(body)
    with pytest.raises(InvalidRequest) as caught:
        request.to_params([])
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning.summary"),
        ({"truncation": "auto"}, "truncation"),
    ],
)
def test_fields_tokenwire_cannot_honour_are_named(body, param):
    refused = ResponsesRequest.model_validate({"input": "x", **body}).refused()
    assert refused is not None and refused[0] == param


def test_a_request_maps_onto_generate_params_fields():
    request = ResponsesRequest.model_validate(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": "hi",
            "max_output_tokens": 20,
            "tools": [
                {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
            ],
            "tool_choice": {"type": "function", "name": "f"},
            "reasoning": {"effort": "low"},
            "text": {
                "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}
            },
        }
    )
    fields, conversation = request.to_params([{"role": "user", "content": "earlier"}])
    assert fields["messages"][0] == {"role": "system", "content": "Be brief."}
    assert conversation == [
        {"role": "user", "content": "earlier"},
        {"role": "user", "content": "hi"},
    ]
    assert fields["max_tokens"] == 20 and fields["reasoning_effort"] == "low"
    assert fields["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert fields["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert fields["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}},
    }
