"""Server-Sent Events framing (WHATWG HTML, section 9.2 "Server-sent events"). Pure: no I/O.

A numbered event is framed as::

    id: <seq>\\n
    event: <type>\\n
    data: <compact JSON>\\n
    \\n

Compact JSON never contains a raw line break, so ``data`` is always one line. ``stream.resumed``
has no seq and therefore no ``id:`` line: a browser keeps its last event id across it.
"""

from __future__ import annotations

from pydantic_core import to_json

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

MEDIA_TYPE = "text/event-stream"

HEADERS = {
    # Proxies and browsers must neither cache nor buffer a live stream.
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

PING = b": ping\n\n"

_TEXT_DELTA_FRAME = b"id: %d\nevent: text.delta\ndata: " + TEXT_DELTA_JSON + b"\n\n"
_REASONING_FRAME = b"id: %d\nevent: reasoning.delta\ndata: " + REASONING_DELTA_JSON + b"\n\n"
_TOOL_CALL_FRAME = b"id: %d\nevent: tool_call.delta\ndata: " + TOOL_CALL_DELTA_JSON + b"\n\n"


_ID_JSON: dict[str, bytes] = {}
"""Stream ids as JSON strings, the same for every frame of a stream (see :func:`_id_json`)."""
_ID_JSON_KEPT = 4096


def _id_json(stream_id: str) -> bytes:
    """``to_json(stream_id)``, remembered for the last few thousand streams (~0.1 µs a
    frame saved)."""
    encoded = _ID_JSON.get(stream_id)
    if encoded is None:
        if len(_ID_JSON) >= _ID_JSON_KEPT:
            _ID_JSON.clear()
        encoded = _ID_JSON[stream_id] = to_json(stream_id)
    return encoded


def encode_event(event: Event) -> bytes:
    """Frame one event: ``id:`` (numbered events only), ``event:``, ``data:``, blank line."""
    if isinstance(event, TextDelta):  # the frame of nearly every event: no model, one format
        seq, stream_id = event.seq, event.stream_id
        sid = _ID_JSON.get(stream_id) or _id_json(stream_id)
        return _TEXT_DELTA_FRAME % (seq, sid, seq, to_json(event.delta))
    if isinstance(event, ReasoningDelta):  # the same for the other per-token events
        seq, stream_id = event.seq, event.stream_id
        sid = _ID_JSON.get(stream_id) or _id_json(stream_id)
        return _REASONING_FRAME % (seq, sid, seq, to_json(event.delta))
    if isinstance(event, ToolCallDelta):
        seq, stream_id = event.seq, event.stream_id
        sid = _ID_JSON.get(stream_id) or _id_json(stream_id)
        return _TOOL_CALL_FRAME % (seq, sid, seq, event.index, to_json(event.delta))
    number: int | None = getattr(event, "seq", None)
    head = (
        f"id: {number}\nevent: {event.type}\n" if number is not None else f"event: {event.type}\n"
    )
    return f"{head}data: {event_json(event)}\n\n".encode()


def encode_comment(text: str) -> bytes:
    """A comment frame (ignored by parsers; keeps idle connections open). Line breaks become
    separate comment lines so that the text can never start a field."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(f": {line}\n" for line in lines).encode() + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """Set the client's reconnection delay (``retry:`` field, an integer number of milliseconds).

    Raises:
        ValueError: if ``milliseconds`` is negative.
    """
    if milliseconds < 0:
        raise ValueError(f"retry must be >= 0 milliseconds, got {milliseconds}")
    return f"retry: {milliseconds}\n\n".encode()
