"""WebSocket JSON framing of wire protocol v1. Pure: no I/O.

Every message is one JSON text frame. Server -> client frames are the events of
:mod:`tokenwire.protocol.events` plus ``{"type":"pong","id":...}``; client -> server frames are
the messages of :mod:`tokenwire.protocol.requests`.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring

from pydantic import ValidationError

from tokenwire.errors import InvalidRequest
from tokenwire.protocol.events import (
    REASONING_DELTA_JSON,
    TEXT_DELTA_JSON,
    TOOL_CALL_DELTA_JSON,
    Event,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    event_json,
)
from tokenwire.protocol.requests import (
    CLIENT_MESSAGE_ADAPTER,
    ClientMessage,
    describe_validation_error,
)

SUBPROTOCOL = "tokenwire"
"""The subprotocol a server socket selects when the client offers it (RFC 6455 section 1.9):
a browser offers it beside a signed token (``new WebSocket(url, ["tokenwire", token])``), the
token authenticates the handshake (:mod:`tokenwire.edge.security`) and is never echoed."""


class CloseCode:
    """WebSocket close codes (RFC 6455 section 7.4.1; 1012 and 1013 from the IANA registry;
    4000-4999 are private-use codes, tokenwire's own)."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009  # sent by uvicorn (ws_max_size)
    INTERNAL_ERROR = 1011  # sent by uvicorn, also when pings go unanswered
    SERVICE_RESTART = 1012  # the server drains (shutdown): reconnect and resume
    TRY_AGAIN_LATER = 1013
    SLOW_CONSUMER = 4008  # the client did not keep up: reconnect and resume (retryable)


_TEXT_DELTA_TEXT = TEXT_DELTA_JSON.decode().replace("%b", "%s")
_REASONING_TEXT = REASONING_DELTA_JSON.decode().replace("%b", "%s")
_TOOL_CALL_TEXT = TOOL_CALL_DELTA_JSON.decode().replace("%b", "%s")


def encode_event(event: Event) -> str:
    """The JSON text frame of one event (:func:`~tokenwire.protocol.events.event_json`).

    A delta (text, reasoning, a tool call's arguments), the frame of nearly every event, is
    formatted as text at once: the standard library's C JSON string encoder gives the same
    text as pydantic's for any valid string, and this skips the UTF-8 round trip (~0.5 µs
    per token)."""
    if isinstance(event, TextDelta):
        sid, text = encode_basestring(event.stream_id), encode_basestring(event.delta)
        return _TEXT_DELTA_TEXT % (sid, event.seq, text)
    if isinstance(event, ReasoningDelta):
        sid, text = encode_basestring(event.stream_id), encode_basestring(event.delta)
        return _REASONING_TEXT % (sid, event.seq, text)
    if isinstance(event, ToolCallDelta):
        sid, text = encode_basestring(event.stream_id), encode_basestring(event.delta)
        return _TOOL_CALL_TEXT % (sid, event.seq, event.index, text)
    return event_json(event)


def encode_pong(ping_id: str | int | None) -> str:
    """The answer to a client ``ping`` message, echoing its id."""
    return json.dumps({"type": "pong", "id": ping_id}, separators=(",", ":"), ensure_ascii=False)


def decode_client_message(frame: str | bytes) -> ClientMessage:
    """Parse one client frame.

    Raises:
        InvalidRequest: the frame is not JSON (or nested deeper than about 1,000 levels),
            not an object, has an unknown ``type`` or an
            invalid field; the message names the problem (e.g. ``messages: Field required``).
    """
    try:
        data = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"message is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidRequest("message is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRequest("message must be a JSON object with a 'type' field")
    try:
        return CLIENT_MESSAGE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_error(exc)) from exc
