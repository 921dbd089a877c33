"""Hypothesis drives the pure parsers with arbitrary input: the WebSocket message parser, the
HTTP request models, the SSE codec, and the security parsers (origins, tokens, key files).
Each either succeeds or raises its one documented error, never anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tokenwire.edge.keys import TokenSigner, parse_key_file
from tokenwire.edge.limits import check_request
from tokenwire.edge.security import OriginPolicy, normalize_origin
from tokenwire.errors import ErrorCode, InvalidRequest, Unauthorized
from tokenwire.protocol import openai as oai
from tokenwire.protocol import sse
from tokenwire.protocol.events import (
    ErrorEvent,
    FinishReason,
    StreamEnd,
    StreamStart,
    TextDelta,
    Usage,
    parse_event,
)
from tokenwire.protocol.requests import (
    ClientMessage,
    GenerateParams,
    describe_validation_error,
)
from tokenwire.protocol.websocket import decode_client_message
from tokenwire.settings import Settings
from tokenwire_client.sse import SSEDecoder

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
FIELDS = [
    "type",
    "messages",
    "role",
    "content",
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "on_disconnect",
    "request_id",
    "stream_id",
    "after_seq",
    "id",
    "stream",
    "n",
]
message_like = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "tool", ""]) | json_values,
        "content": st.text(max_size=30)
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text()}))
        | json_values,
    }
)
schema_like = st.dictionaries(
    st.sampled_from(FIELDS),
    json_values
    | st.sampled_from(["generate", "cancel", "resume", "ping", "auth", "cancel"])
    | st.lists(message_like, max_size=3),
    max_size=8,
)


def check_client_frame(frame: str | bytes) -> ClientMessage | None:
    try:
        return decode_client_message(frame)
    except InvalidRequest as exc:
        assert exc.code is ErrorCode.INVALID_REQUEST and exc.message
        assert "Traceback" not in exc.message
        return None


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_websocket_parser_with_arbitrary_frames(frame):
    check_client_frame(frame)


@FUZZ
@given(schema_like)
def test_websocket_parser_with_schema_like_objects(data):
    message = check_client_frame(json.dumps(data))
    if message is not None:
        assert message.type == data["type"]


@FUZZ
@given(json_values | schema_like)
def test_generate_params_and_chat_request_models(data):
    for model in (GenerateParams, oai.ChatCompletionRequest):
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            described = describe_validation_error(exc)
            assert isinstance(described, str) and described
            continue
        assert parsed.messages
        params = parsed if isinstance(parsed, GenerateParams) else parsed.to_generate_params()
        try:
            check_request(params, Settings(max_messages=2, max_input_chars=50))
        except InvalidRequest as exc:
            assert exc.message.startswith("messages: at most")


texts = st.text(st.characters(codec="utf-8"), max_size=40)


def events_of(draw_texts: list[str], error: str | None) -> list[Any]:
    events: list[Any] = [StreamStart(stream_id="s", seq=1, model="m", created=1, request_id="r")]
    seq = 1
    for text in draw_texts:
        seq += 1
        events.append(TextDelta(stream_id="s", seq=seq, delta=text))
    if error is not None:
        seq += 1
        events.append(
            ErrorEvent(
                stream_id="s", seq=seq, code=ErrorCode.PROVIDER_ERROR, message=error, retryable=True
            )
        )
    events.append(
        StreamEnd(stream_id="s", seq=seq + 1, finish_reason=FinishReason.STOP, usage=Usage.of(1, 2))
    )
    return events


@FUZZ
@given(
    st.lists(texts, max_size=10),
    st.none() | texts,
    st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
)
def test_sse_codec_round_trips_any_text_at_any_chunk_split(deltas, error, cuts):
    events = events_of(deltas, error)
    wire = b"".join(sse.encode_event(event) for event in events) + sse.PING
    decoder = SSEDecoder()
    decoded = []
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    for start, end in zip(points, points[1:], strict=False):
        decoded += decoder.decode(wire[start:end])
    assert [parse_event(e.data) for e in decoded] == events
    assert [e.event for e in decoded] == [e.type for e in events]
    assert decoder.last_event_id == str(events[-1].seq)


@FUZZ
@given(st.binary(max_size=500))
def test_sse_decoder_takes_arbitrary_bytes(data):
    decoder = SSEDecoder()
    for event in decoder.decode(data) + decoder.decode(b"\n\n"):
        assert isinstance(event.data, str)


@FUZZ
@given(st.text(max_size=80))
def test_origin_parsing_never_fails_other_than_value_error(origin):
    try:
        normalized = normalize_origin(origin)
    except ValueError:
        normalized = None
    scope = {"type": "http", "scheme": "http", "headers": [(b"host", b"127.0.0.1:8000")]}
    allowed = OriginPolicy(["https://app.example.com"]).allows(origin, scope)
    if allowed:
        assert normalized in ("https://app.example.com", "http://127.0.0.1:8000")


token_like = st.builds(
    lambda key_id, expiry, signature: f"twt1.{key_id}.{expiry}.{signature}",
    st.text(max_size=20),
    st.text(max_size=12) | st.integers(min_value=0).map(str),
    st.text(max_size=50),
)


@FUZZ
@given(st.text(max_size=120) | token_like)
def test_token_verification_only_raises_unauthorized(token):
    signer = TokenSigner(b"k")
    try:
        signer.verify(token)
    except Unauthorized:
        return
    raise AssertionError(f"an arbitrary token was accepted: {token!r}")


@FUZZ
@given(st.text(max_size=300))
def test_key_file_parsing_only_raises_value_error(text):
    try:
        keys = parse_key_file(text)
    except ValueError as exc:
        assert "line" in str(exc)
        return
    assert all(len(digest) == 64 for digest in keys)
