"""Byte-exact tables for the SSE, WebSocket and OpenAI-chunk codecs (no I/O)."""

from __future__ import annotations

import json

import pytest

from tokenwire.errors import ErrorCode, InvalidRequest
from tokenwire.protocol import openai as oai
from tokenwire.protocol import sse, websocket
from tokenwire.protocol.events import (
    ErrorEvent,
    FinishReason,
    StreamEnd,
    StreamReset,
    StreamResumed,
    StreamStart,
    TextDelta,
    Usage,
    parse_event,
)
from tokenwire.protocol.requests import CancelMessage, GenerateMessage, PingMessage

USAGE = Usage.of(5, 3)

SSE_TABLE = [
    (
        StreamStart(stream_id="s1", seq=1, model="m", created=1700000000),
        b'id: 1\nevent: stream.start\ndata: {"type":"stream.start","stream_id":"s1","seq":1,'
        b'"model":"m","created":1700000000,"request_id":null}\n\n',
    ),
    (
        TextDelta(stream_id="s1", seq=2, delta="Hello"),
        b'id: 2\nevent: text.delta\ndata: {"type":"text.delta","stream_id":"s1","seq":2,'
        b'"delta":"Hello"}\n\n',
    ),
    (  # a line break inside the text stays inside one data line, escaped by JSON
        TextDelta(stream_id="s1", seq=3, delta="a\nb\r\n"),
        b'id: 3\nevent: text.delta\ndata: {"type":"text.delta","stream_id":"s1","seq":3,'
        b'"delta":"a\\nb\\r\\n"}\n\n',
    ),
    (  # non-ASCII text is sent as UTF-8, not \u escapes
        TextDelta(stream_id="s1", seq=4, delta="é🙂"),
        'id: 4\nevent: text.delta\ndata: {"type":"text.delta","stream_id":"s1","seq":4,'
        '"delta":"é🙂"}\n\n'.encode(),
    ),
    (
        ErrorEvent(
            stream_id="s1", seq=5, code=ErrorCode.PROVIDER_ERROR, message="boom", retryable=True
        ),
        b'id: 5\nevent: error\ndata: {"type":"error","stream_id":"s1","seq":5,'
        b'"code":"provider_error","message":"boom","retryable":true}\n\n',
    ),
    (
        StreamEnd(stream_id="s1", seq=6, finish_reason=FinishReason.STOP, usage=USAGE),
        b'id: 6\nevent: stream.end\ndata: {"type":"stream.end","stream_id":"s1","seq":6,'
        b'"finish_reason":"stop","usage":{"prompt_tokens":5,"completion_tokens":3,'
        b'"total_tokens":8}}\n\n',
    ),
    (
        StreamEnd(stream_id="s1", seq=7, finish_reason=FinishReason.CANCELLED, usage=None),
        b'id: 7\nevent: stream.end\ndata: {"type":"stream.end","stream_id":"s1","seq":7,'
        b'"finish_reason":"cancelled","usage":null}\n\n',
    ),
    (  # no seq, so no id line: the browser keeps its last event id
        StreamResumed(stream_id="s1", after_seq=3),
        b'event: stream.resumed\ndata: {"type":"stream.resumed","stream_id":"s1",'
        b'"after_seq":3}\n\n',
    ),
    (
        StreamReset(stream_id="s1", reason="expired"),
        b'event: stream.reset\ndata: {"type":"stream.reset","stream_id":"s1",'
        b'"reason":"expired"}\n\n',
    ),
]


@pytest.mark.parametrize(("event", "frame"), SSE_TABLE)
def test_sse_frames_are_byte_exact(event, frame):
    assert sse.encode_event(event) == frame


@pytest.mark.parametrize(("event", "frame"), SSE_TABLE)
def test_websocket_frame_is_the_sse_data_line(event, frame):
    data_line = frame.decode().split("data: ", 1)[1].removesuffix("\n\n")
    assert websocket.encode_event(event) == data_line
    assert parse_event(websocket.encode_event(event)) == event


def test_streamless_error_omits_stream_keys():
    event = ErrorEvent(code=ErrorCode.INVALID_REQUEST, message="bad")
    assert websocket.encode_event(event) == (
        '{"type":"error","code":"invalid_request","message":"bad","retryable":false}'
    )


@pytest.mark.parametrize(
    ("text", "frame"),
    [
        ("ping", b": ping\n\n"),
        ("a\nb", b": a\n: b\n\n"),
        ("a\r\nb\rc", b": a\n: b\n: c\n\n"),
    ],
)
def test_sse_comments_cannot_start_a_field(text, frame):
    assert sse.encode_comment(text) == frame


def test_sse_retry_and_ping():
    assert sse.encode_retry(3000) == b"retry: 3000\n\n"
    assert sse.PING == b": ping\n\n"
    with pytest.raises(ValueError, match="retry must be >= 0"):
        sse.encode_retry(-1)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type":"cancel","stream_id":"s1"}', CancelMessage(type="cancel", stream_id="s1")),
        ('{"type":"ping","id":7}', PingMessage(type="ping", id=7)),
        (
            b'{"type":"generate","request_id":"r1","messages":[{"role":"user","content":"hi"}]}',
            GenerateMessage.model_validate(
                {
                    "type": "generate",
                    "request_id": "r1",
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ),
        ),
    ],
)
def test_client_messages_decode(frame, expected):
    assert websocket.decode_client_message(frame) == expected


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "message is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"type":"dance"}', "type"),
        ('{"type":"generate"}', "messages: Field required"),
        ('{"type":"generate","messages":[{"role":"robot","content":"x"}]}', "messages.0.role"),
        ('{"type":"generate","messages":[],"max_tokens":0}', "messages: List should have"),
        ('{"type":"cancel"}', "stream_id: Field required"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_client_messages_name_the_problem(frame, message):
    with pytest.raises(InvalidRequest, match=message):
        websocket.decode_client_message(frame)


def test_pong_echoes_id():
    assert websocket.encode_pong("a") == '{"type":"pong","id":"a"}'
    assert websocket.encode_pong(None) == '{"type":"pong","id":null}'


def test_openai_chunks_are_byte_exact():
    encoder = oai.ChunkEncoder("chatcmpl-1", "m", 1700000000, include_usage=True)
    head = (
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m",'
        '"system_fingerprint":null,'
    )
    frames = [
        encoder.encode_event(StreamStart(stream_id="s", seq=1, model="m", created=1)),
        encoder.encode_event(TextDelta(stream_id="s", seq=2, delta="Hi")),
        encoder.encode_event(
            StreamEnd(stream_id="s", seq=3, finish_reason=FinishReason.LENGTH, usage=USAGE)
        ),
    ]
    assert (
        frames[0]
        == (
            f'data: {head}"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},'
            f'"logprobs":null,"finish_reason":null}}],"usage":null}}\n\n'
        ).encode()
    )
    assert (
        frames[1]
        == (
            f'data: {head}"choices":[{{"index":0,"delta":{{"content":"Hi"}},'
            f'"logprobs":null,"finish_reason":null}}],"usage":null}}\n\n'
        ).encode()
    )
    assert (
        frames[2]
        == (
            f'data: {head}"choices":[{{"index":0,"delta":{{}},"logprobs":null,'
            f'"finish_reason":"length"}}],"usage":null}}\n\n'
            f'data: {head}"choices":[],"usage":{{"prompt_tokens":5,"completion_tokens":3,'
            f'"total_tokens":8}}}}\n\n'
            "data: [DONE]\n\n"
        ).encode()
    )


def test_openai_chunks_without_usage_have_no_usage_key():
    encoder = oai.ChunkEncoder("c", "m", 1, include_usage=False)
    frame = encoder.encode_event(TextDelta(stream_id="s", seq=2, delta="x"))
    assert "usage" not in json.loads(frame.removeprefix(b"data: "))
    end = encoder.encode_event(
        StreamEnd(stream_id="s", seq=3, finish_reason=FinishReason.STOP, usage=USAGE)
    )
    assert end.count(b"data: ") == 2  # the finish chunk and [DONE], no usage chunk


def test_openai_error_replaces_the_finish_chunk():
    encoder = oai.ChunkEncoder("c", "m", 1, include_usage=False)
    error = encoder.encode_event(
        ErrorEvent(stream_id="s", seq=2, code=ErrorCode.PROVIDER_ERROR, message="upstream down")
    )
    assert json.loads(error.removeprefix(b"data: ")) == {
        "error": {
            "message": "upstream down",
            "type": "server_error",
            "param": None,
            "code": "provider_error",
        }
    }
    end = encoder.encode_event(
        StreamEnd(stream_id="s", seq=3, finish_reason=FinishReason.ERROR, usage=None)
    )
    assert end == oai.DONE


def test_openai_request_maps_to_generate_params():
    request = oai.ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            "max_completion_tokens": 9,
            "stream": True,
            "stream_options": {"include_usage": True},
            "frequency_penalty": 0.5,  # unknown to us: ignored, as upstreams do
        }
    )
    params = request.to_generate_params()
    assert request.include_usage
    assert params.messages[0].content == "ab"
    assert params.max_tokens == 9
    assert params.model == "m"
