"""The AI SDK UI message stream codec, pure: the chunks of each event kind (exact dicts, no key
the SDK's schema does not name), byte-exact SSE frames, a replay that yields the same chunks,
and the conversion of UI messages (what DefaultChatTransport posts) to chat messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenwire.errors import ErrorCode, InvalidRequest
from tokenwire.protocol.aisdk import (
    DONE,
    ChatRequest,
    UIMessageEncoder,
    UIMessageSSE,
    encode_sse,
    model_messages,
)
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamQueued,
    StreamResumed,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenwire.protocol.requests import GenerateParams
from tokenwire.transports.delivery import merge_deltas

# The keys each chunk type may carry (packages/ai/src/ui-message-stream/ui-message-chunks.ts,
# ai 7.0.173): a chunk with any other key fails a strict schema.
SCHEMA_KEYS = {
    "start": {"type", "messageId", "messageMetadata"},
    "finish": {"type", "finishReason", "messageMetadata"},
    "abort": {"type", "reason"},
    "message-metadata": {"type", "messageMetadata"},
    "start-step": {"type"},
    "finish-step": {"type"},
    "text-start": {"type", "id", "providerMetadata"},
    "text-delta": {"type", "id", "delta", "providerMetadata"},
    "text-end": {"type", "id", "providerMetadata"},
    "reasoning-start": {"type", "id", "providerMetadata"},
    "reasoning-delta": {"type", "id", "delta", "providerMetadata"},
    "reasoning-end": {"type", "id", "providerMetadata"},
    "tool-input-start": {"type", "toolCallId", "toolName", "providerExecuted", "dynamic", "title"},
    "tool-input-delta": {"type", "toolCallId", "inputTextDelta"},
    "tool-input-available": {"type", "toolCallId", "toolName", "input"},
    "tool-input-error": {"type", "toolCallId", "toolName", "input", "errorText"},
    "error": {"type", "errorText"},
    "data-queued": {"type", "id", "data", "transient"},
}
FINISH_REASONS = {"stop", "length", "content-filter", "tool-calls", "error", "interrupted", "other"}


def rich_stream(finish: FinishReason = FinishReason.TOOL_CALLS) -> list[Event]:
    events: list[Any] = [StreamStart(stream_id="s", seq=1, model="m", created=1767225600)]

    def add(make: Any, **fields: Any) -> None:
        events.append(make(stream_id="s", seq=len(events) + 1, **fields))

    add(StreamQueued, position=0)
    add(ReasoningDelta, delta="Let me")
    add(ReasoningDelta, delta=" think")
    add(TextDelta, delta="Hel")
    add(TextDelta, delta="lo")
    add(ToolCallStart, index=0, call_id="call_1", name="get_weather")
    add(ToolCallDelta, index=0, delta='{"city":')
    add(ToolCallDelta, index=0, delta='"Paris"}')
    add(ToolCallEnd, index=0, call_id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    usage = Usage(prompt_tokens=4, completion_tokens=9, total_tokens=13, reasoning_tokens=2)
    add(StreamEnd, finish_reason=finish, usage=usage)
    return events


def encode_all(events: list[Event], message_id: str = "msg_1") -> list[dict[str, Any]]:
    encoder = UIMessageEncoder(message_id)
    return [chunk for event in events for chunk in encoder.encode(event)]


def test_a_rich_stream_becomes_the_sdk_chunks_in_order():
    assert encode_all(rich_stream()) == [
        {"type": "start", "messageId": "msg_1"},
        {"type": "start-step"},
        {"type": "data-queued", "data": {"position": 0}, "transient": True},
        {"type": "reasoning-start", "id": "rs_0"},
        {"type": "reasoning-delta", "id": "rs_0", "delta": "Let me"},
        {"type": "reasoning-delta", "id": "rs_0", "delta": " think"},
        {"type": "reasoning-end", "id": "rs_0"},
        {"type": "text-start", "id": "txt_1"},
        {"type": "text-delta", "id": "txt_1", "delta": "Hel"},
        {"type": "text-delta", "id": "txt_1", "delta": "lo"},
        {"type": "text-end", "id": "txt_1"},
        {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "get_weather"},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '{"city":'},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '"Paris"}'},
        {
            "type": "tool-input-available",
            "toolCallId": "call_1",
            "toolName": "get_weather",
            "input": {"city": "Paris"},
        },
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "tool-calls",
            "messageMetadata": {
                "model": "m",
                "finishReason": "tool_calls",
                "usage": {
                    "inputTokens": 4,
                    "outputTokens": 9,
                    "totalTokens": 13,
                    "outputTokenDetails": {"reasoningTokens": 2},
                },
            },
        },
    ]


@pytest.mark.parametrize("finish", list(FinishReason))
def test_every_chunk_keeps_to_the_keys_of_its_schema(finish: FinishReason):
    chunks = encode_all(rich_stream(finish))
    for chunk in chunks:
        assert set(chunk) <= SCHEMA_KEYS[chunk["type"]], chunk
        if chunk["type"] == "finish":
            assert chunk["finishReason"] in FINISH_REASONS


def test_a_cancelled_stream_closes_its_part_and_aborts_without_a_reason():
    events: list[Event] = [
        StreamStart(stream_id="s", seq=1, model="m", created=0),
        TextDelta(stream_id="s", seq=2, delta="Hi"),
        StreamEnd(stream_id="s", seq=3, finish_reason=FinishReason.CANCELLED, usage=Usage.of(3, 1)),
    ]
    chunks = encode_all(events)
    assert chunks[-4:] == [
        {"type": "text-end", "id": "txt_0"},
        {"type": "finish-step"},
        {
            "type": "message-metadata",
            "messageMetadata": {
                "model": "m",
                "finishReason": "cancelled",
                "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4},
            },
        },
        {"type": "abort"},
    ]
    assert not any(chunk["type"] == "finish" for chunk in chunks)


def test_an_error_is_an_error_chunk_then_a_finish_with_reason_error():
    events: list[Event] = [
        StreamStart(stream_id="s", seq=1, model="m", created=0),
        TextDelta(stream_id="s", seq=2, delta="Hi"),
        ErrorEvent(stream_id="s", seq=3, code=ErrorCode.PROVIDER_ERROR, message="upstream died"),
        StreamEnd(stream_id="s", seq=4, finish_reason=FinishReason.ERROR, usage=None),
    ]
    chunks = encode_all(events)
    assert chunks[4:] == [
        {"type": "error", "errorText": "upstream died"},
        {"type": "text-end", "id": "txt_0"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "error",
            "messageMetadata": {"model": "m", "finishReason": "error", "usage": None},
        },
    ]


def test_arguments_that_are_not_json_are_a_tool_input_error_and_empty_ones_an_empty_object():
    start = StreamStart(stream_id="s", seq=1, model="m", created=0)
    bad = ToolCallEnd(stream_id="s", seq=2, index=0, call_id="c", name="f", arguments="{oops")
    empty = ToolCallEnd(stream_id="s", seq=3, index=1, call_id="d", name="g", arguments="")
    chunks = encode_all([start, bad, empty])
    assert chunks[2]["type"] == "tool-input-error"
    assert chunks[2]["input"] == "{oops"
    assert "not valid JSON" in chunks[2]["errorText"]
    assert chunks[3] == {
        "type": "tool-input-available",
        "toolCallId": "d",
        "toolName": "g",
        "input": {},
    }


def test_a_replay_yields_the_same_chunks_and_merged_deltas_the_same_text():
    events = rich_stream()
    assert encode_all(events) == encode_all(events)
    merged = merge_deltas(events)
    assert len(merged) < len(events)
    live, replay = encode_all(merged), encode_all(events)
    assert [c["type"] for c in live if "delta" not in c["type"]] == [
        c["type"] for c in replay if "delta" not in c["type"]
    ]

    def text(chunks: list[dict[str, Any]], kind: str) -> str:
        return "".join(
            c.get("delta", c.get("inputTextDelta", "")) for c in chunks if c["type"] == kind
        )

    for kind in ("text-delta", "reasoning-delta", "tool-input-delta"):
        assert text(live, kind) == text(replay, kind)


def test_stream_resumed_has_no_chunk():
    assert UIMessageEncoder("m").encode(StreamResumed(stream_id="s", after_seq=3)) == []


def test_sse_frames_are_byte_exact_with_the_seq_as_id_and_done_after_the_end():
    assert encode_sse([{"type": "start-step"}]) == b'data: {"type":"start-step"}\n\n'
    assert encode_sse([{"type": "text-delta", "id": "txt_0", "delta": "é\n"}], 7) == (
        b'id: 7\ndata: {"type":"text-delta","id":"txt_0","delta":"\xc3\xa9\\n"}\n\n'
    )
    codec = UIMessageSSE("msg_x")
    first = codec(StreamStart(stream_id="s", seq=1, model="m", created=0))
    assert first == (
        b'id: 1\ndata: {"type":"start","messageId":"msg_x"}\n\n'
        b'id: 1\ndata: {"type":"start-step"}\n\n'
    )
    last = codec(StreamEnd(stream_id="s", seq=2, finish_reason=FinishReason.STOP, usage=None))
    assert last.endswith(b"\n\n" + DONE)
    assert last.count(DONE) == 1
    assert codec(StreamResumed(stream_id="s", after_seq=1)) == b""


# -- requests -------------------------------------------------------------------------------


def user(text: str, message_id: str = "u1") -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "chat_1", "messages": messages, "trigger": "submit-message", **extra}


def test_a_text_conversation_converts_to_chat_messages():
    request = ChatRequest.parse(
        body(
            [
                {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
                user("Hi"),
                {
                    "id": "a1",
                    "role": "assistant",
                    "parts": [
                        {"type": "step-start"},
                        {"type": "reasoning", "text": "greet", "state": "done"},
                        {"type": "text", "text": "Hello!", "state": "done"},
                    ],
                },
                user("Again", "u2"),
            ],
            temperature=0.5,
            max_tokens=20,
        )
    )
    fields = request.to_params()
    assert fields["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]
    params = GenerateParams.model_validate(fields)
    assert (params.temperature, params.max_tokens) == (0.5, 20)
    assert request.response_message_id().startswith("msg_")


def test_images_become_image_url_content_and_data_parts_are_left_out():
    url = "data:image/png;base64,iVBORw0KGgo="
    message = {
        "id": "u1",
        "role": "user",
        "parts": [
            {"type": "text", "text": "What is this?"},
            {"type": "file", "mediaType": "image/png", "url": url, "filename": "a.png"},
            {"type": "data-weather", "data": {"c": 1}},
        ],
    }
    converted = model_messages(ChatRequest.parse(body([message])).messages)
    assert converted == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    GenerateParams.model_validate({"messages": converted})


def test_tool_parts_become_tool_calls_and_tool_results_per_step():
    assistant = {
        "id": "a1",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "text", "text": "Let me look."},
            {
                "type": "tool-get_weather",
                "toolCallId": "call_1",
                "state": "output-available",
                "input": {"city": "Paris"},
                "output": {"tempC": 21},
            },
            {
                "type": "dynamic-tool",
                "toolName": "lookup",
                "toolCallId": "call_2",
                "state": "output-error",
                "input": {"q": "x"},
                "errorText": "boom",
            },
            {"type": "step-start"},
            {"type": "text", "text": "It is 21 C."},
        ],
    }
    request = ChatRequest.parse(body([user("Weather?"), assistant]))
    assert request.response_message_id() == "a1"  # a continuation extends the last message
    converted = model_messages(request.messages)
    assert converted[1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"x"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"tempC":21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "boom"},
        {"role": "assistant", "content": "It is 21 C."},
    ]
    GenerateParams.model_validate({"messages": converted})


def refusal(data: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        ChatRequest.parse(data).to_params()
    return caught.value


@pytest.mark.parametrize(
    ("data", "param", "words"),
    [
        ({"id": "c", "trigger": "submit-message"}, "messages", "Field required"),
        (body([]), "messages", "at least 1"),
        (
            body([{"id": "u", "role": "user", "parts": [{"type": "video-clip"}]}]),
            "messages.0.parts.0.type",
            "'video-clip'",
        ),
        (
            body(
                [
                    {
                        "id": "u",
                        "role": "user",
                        "parts": [
                            {
                                "type": "file",
                                "mediaType": "application/pdf",
                                "url": "https://x/a.pdf",
                            }
                        ],
                    }
                ]
            ),
            "messages.0.parts.0.mediaType",
            "image",
        ),
        (
            body(
                [
                    user("q"),
                    {
                        "id": "a",
                        "role": "assistant",
                        "parts": [
                            {
                                "type": "tool-f",
                                "toolCallId": "c1",
                                "state": "input-available",
                                "input": {},
                            }
                        ],
                    },
                ]
            ),
            "messages.1.parts.0.state",
            "no result",
        ),
        (body([user("q")], top_k=3), "top_k", "unknown body field"),
        (body([{"id": "u", "role": "robot", "parts": []}]), "messages.0.role", "Input should be"),
        ([1, 2], None, "JSON object"),
    ],
)
def test_bad_input_is_refused_naming_the_field(data: Any, param: str | None, words: str):
    error = refusal(data)
    assert error.param == param
    assert words in error.message
    assert error.status == 400


def test_a_refused_body_field_names_what_is_taken():
    error = refusal(body([user("q")], system="x"))
    assert error.message.startswith("system: unknown body field")
    json.dumps(error.message)  # plain text
